"""The running stack over HTTP, as a frontend, an uptime check or Cloud Scheduler calls it."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.usefixtures("running_stack")


def test_health_reports_version_and_every_backing_service(running_stack):
    response = requests.get(running_stack.url("health") + "/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == "local"
    names = {check["name"]: check["ok"] for check in body["checks"]}
    assert names == {
        "firestore": True,
        "pubsub": True,
        "auth": True,
        "storage": True,
        "smtp": True,
        "firestore-read": True,
    }


def test_unknown_path_and_wrong_method_are_problem_documents(running_stack):
    base = running_stack.url("health")
    missing = requests.get(base + "/health/nope", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    wrong = requests.delete(base + "/health", timeout=10)
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]


def test_scheduled_heartbeat_travels_through_pubsub_to_the_recorder(running_stack):
    health_url = running_stack.url("health") + "/health"
    assert requests.get(health_url, timeout=10).json()["heartbeat"] is None

    fired = requests.post(running_stack.url("heartbeat-emit") + "/", json={}, timeout=10)
    assert fired.status_code == 202

    deadline = time.monotonic() + 30
    beat = None
    while time.monotonic() < deadline and beat is None:
        beat = requests.get(health_url, timeout=10).json()["heartbeat"]
        if beat is None:
            time.sleep(0.2)
    assert beat is not None, "the heartbeat never reached the recorder through the push subscription"
    assert beat["age_seconds"] < 30


def test_the_scheduled_function_refuses_get(running_stack):
    response = requests.get(running_stack.url("heartbeat-emit") + "/", timeout=10)
    assert response.status_code == 405

"""The running stack over HTTP, as a frontend, an uptime check or Cloud Scheduler calls it."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.usefixtures("running_stack")


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

"""The health function, as an uptime check calls it (moved from tests/e2e/test_health_and_heartbeat.py:
neither needs a process of its own; the heartbeat's trip through Pub/Sub stayed there)."""

from __future__ import annotations


def test_health_reports_version_and_every_backing_service(emulators, http_function):
    response = http_function("health").get("/health")
    assert response.status_code == 200
    body = response.json
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


def test_unknown_path_and_wrong_method_are_problem_documents(http_function):
    health = http_function("health")
    missing = health.get("/health/nope")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    wrong = health.delete("/health")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]

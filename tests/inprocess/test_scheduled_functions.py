"""Scheduled functions take Cloud Scheduler's POST only (moved from tests/e2e: a refused method
needs no process of its own)."""

from __future__ import annotations

import pytest

import local_stack

SCHEDULED = [entry.name for entry in local_stack.load_catalogue() if entry.kind == "schedule"]


# From tests/e2e/test_health_and_heartbeat.py.
def test_the_scheduled_function_refuses_get(http_function):
    response = http_function("heartbeat-emit").get("/")
    assert response.status_code == 405


# From tests/e2e/test_backups_functions.py.
def test_scheduled_functions_take_post_only(http_function):
    for name in ("firestore-snapshot", "snapshot-verify"):
        response = http_function(name).get("/")
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("name", SCHEDULED)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_every_scheduled_function_refuses_other_methods_with_a_problem_document(http_function, name, method):
    response = http_function(name).open("/", method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json == {
        "type": "urn:orderpally:problem:method-not-allowed",
        "title": "Method not allowed",
        "status": 405,
        "detail": "Use POST.",
        "instance": "/",
    }

"""The snapshot and verification functions, fired over HTTP the way Cloud Scheduler fires them."""

from __future__ import annotations

from pathlib import Path

import requests

HEADERS = {"X-CloudScheduler": "true", "X-CloudScheduler-ScheduleTime": "2026-11-24T19:00:00Z"}


def test_firing_a_slot_twice_makes_one_export_and_verification_then_passes(running_stack):
    url = running_stack.url("firestore-snapshot") + "/"
    verify_url = running_stack.url("snapshot-verify") + "/"
    before = requests.post(verify_url, json={}, timeout=30).json()
    assert before["status"] == "failed"
    assert "no completed snapshot" in before["problems"]

    first = requests.post(url, json={}, headers=HEADERS, timeout=120)
    second = requests.post(url, json={}, headers=HEADERS, timeout=120)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["duplicate"] is True
    exports = Path(running_stack.function_env["LOCAL_BACKUPS_DIR"]) / "20261124T190000Z"
    assert len(list(exports.iterdir())) == 1

    # The slot is in the past, so the freshness rule fails; a slot for now passes.
    assert requests.post(url, json={}, timeout=120).status_code == 201
    after = requests.post(verify_url, json={}, timeout=30).json()
    assert after == {"status": "ok", "ok": True, "problems": []}

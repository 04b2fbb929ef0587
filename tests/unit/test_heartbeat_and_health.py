from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orderpally.health.service import Check, overall
from orderpally.heartbeat.service import is_newer, new_heartbeat

T = datetime(2026, 11, 24, 12, tzinfo=UTC)


def test_heartbeat_only_moves_forward():
    assert is_newer(T, None)
    assert is_newer(T + timedelta(seconds=1), T)
    assert not is_newer(T, T)
    assert not is_newer(T - timedelta(minutes=5), T)


def test_heartbeat_is_stored_in_utc():
    taipei = T.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Taipei"))
    assert new_heartbeat(taipei).emitted_at.utcoffset() == timedelta(0)


def test_health_is_ok_only_when_every_check_is():
    assert overall([Check("a", True), Check("b", True)]) == "ok"
    assert overall([Check("a", True), Check("b", False)]) == "unavailable"


def test_health_reports_a_client_that_cannot_be_made_as_a_failed_read_not_a_crash():
    from types import SimpleNamespace

    from google.auth.exceptions import DefaultCredentialsError

    from orderpally.health.service import report

    def no_client():
        raise DefaultCredentialsError("no credentials")

    cfg = SimpleNamespace(uses_emulators=False, version="v1", environment="production")
    status, body = report(cfg, no_client, now=lambda: T)  # only the fields health reads
    assert status == 503
    assert body["checks"] == [{"name": "firestore-read", "ok": False, "detail": "DefaultCredentialsError"}]

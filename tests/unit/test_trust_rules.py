"""The trust report's pure parts: what each fact says, and what it never shows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from orderpally.trust import rules

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
KEY = "projects/p/locations/asia-east1/keyRings/orderpally-data/cryptoKeys/orderpally-backups"


def deployment(**overrides) -> rules.Deployment:
    values = {
        "region": "asia-east1",
        "buckets": {"backups": "p-backups", "exports": "p-exports", "attachments": "p-attachments"},
        "encryption_at_rest": {
            "firestore": {"managed_by": "google"},
            "backups": {"key": KEY, "rotation_period": "7776000s"},
        },
        "backup_retention_days": 7,
        "session_lifetime": timedelta(days=5),
    }
    return rules.Deployment(**(values | overrides))


def test_encryption_names_our_key_and_its_rotation_google_keys_or_that_nothing_was_said():
    cfg = deployment()
    assert rules.encryption(cfg, "backups") == {
        "managed_by": "customer",
        "key": KEY,
        "rotation_period_seconds": 7_776_000,
        "rotation_period_days": 90,
    }
    assert rules.encryption(cfg, "firestore") == {"managed_by": "google"}
    assert rules.encryption(cfg, "exports") == {"managed_by": "not_configured"}


def test_retention_is_counted_from_the_termination_date_or_today():
    future = NOW + timedelta(days=20)
    assert rules.termination_day({"status": "scheduled", "terminate_at": future}, NOW) == future.date()
    past = NOW - timedelta(days=2)  # overdue: carried out now
    assert rules.termination_day({"status": "scheduled", "terminate_at": past}, NOW) == NOW.date()
    executed = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    assert rules.termination_day({"status": "executed", "executed_at": executed}, NOW) == date(2026, 1, 5)
    assert rules.termination_day({"status": "cancelled", "terminate_at": future}, NOW) == NOW.date()
    assert rules.termination_day(None, NOW) == NOW.date()


def test_staff_accesses_show_role_reason_and_time_newest_first_never_who_or_from_where():
    trail = [
        {
            "at": NOW - timedelta(days=1),
            "actor": {"kind": "staff", "id": "staff-uid-1", "role": "support"},
            "client_address": "203.0.113.9",
            "reason": "ticket 41",
            "details": {"what": "account"},
        }
    ]
    closed = [{"at": NOW, "role": "security", "reason": "police request", "what": "audit_trail", "staff_id": "s2"}]
    reads = rules.staff_accesses(trail, closed)
    assert [read["role"] for read in reads] == ["security", "support"]
    assert reads[1] == {
        "at": (NOW - timedelta(days=1)).isoformat(),
        "role": "support",
        "reason": "ticket 41",
        "what": "account",
        "reference": None,
    }
    shown = repr(reads)
    assert "staff-uid-1" not in shown
    assert "203.0.113.9" not in shown
    assert "s2" not in shown


def test_legal_holds_give_count_since_and_basis_without_staff_notes():
    holds = [
        {"placed_at": NOW, "authority": "court order 2", "reason": "internal note", "placed_by": "staff-1"},
        {"placed_at": NOW - timedelta(days=9), "authority": "prosecutor", "location_ids": ["orders"]},
    ]
    summary = rules.legal_holds(holds)
    assert summary["count"] == 2
    assert summary["since"] == (NOW - timedelta(days=9)).isoformat()
    assert [hold["basis"] for hold in summary["holds"]] == ["prosecutor", "court order 2"]
    assert "internal note" not in repr(summary)
    assert "staff-1" not in repr(summary)
    assert rules.legal_holds([]) == {"count": 0, "since": None, "holds": []}


def test_a_session_expires_a_lifetime_after_its_sign_in():
    sign_in = {"at": NOW, "details": {"method": "password"}, "client_address": "198.51.100.7"}
    report = rules.sessions([sign_in], None, 1, timedelta(days=5))
    assert report["open"] == [
        {
            "signed_in_at": NOW.isoformat(),
            "method": "password",
            "client_address": "198.51.100.7",
            "expires_at": (NOW + timedelta(days=5)).isoformat(),
        }
    ]
    assert report["single_sign_outs"] == 1
    assert report["last_use_recorded"] is False


def test_a_snapshot_is_kept_its_retention_from_when_it_was_written_and_a_local_path_is_not_shown():
    started = NOW - timedelta(hours=3)
    record = {"started_at": started, "completed_at": NOW, "output_uri": "/home/someone/.local/backups/x"}
    snapshot = rules.last_snapshot(("2026-12-03T06", record), started, deployment())
    assert snapshot is not None
    assert snapshot["kept_until"] == (started + timedelta(days=7)).isoformat()
    assert snapshot["location"] is None
    in_bucket = rules.last_snapshot(("s", record | {"output_uri": "gs://p-backups/s"}), started, deployment())
    assert in_bucket is not None
    assert in_bucket["location"] == "gs://p-backups/s"
    assert rules.last_snapshot(None, None, deployment()) is None

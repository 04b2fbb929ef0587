from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orderpally.backups import rules

NOW = datetime(2026, 11, 24, 19, 3, 41, tzinfo=UTC)


def test_slot_is_the_scheduled_time_in_utc():
    scheduled = datetime(2026, 11, 25, 3, 0, tzinfo=ZoneInfo("Asia/Taipei"))
    assert rules.slot_for(scheduled, NOW) == "20261124T190000Z"


def test_without_a_schedule_time_the_slot_is_the_current_minute():
    assert rules.slot_for(None, NOW) == "20261124T190300Z"
    assert rules.slot_for(None, NOW + timedelta(seconds=10)) == rules.slot_for(None, NOW)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2026-11-24T19:00:00Z", datetime(2026, 11, 24, 19, tzinfo=UTC)),
        ("2026-11-25T03:00:00+08:00", datetime(2026, 11, 24, 19, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_schedule_time_header(header, expected):
    assert rules.parse_schedule_time(header) == expected


def test_slots_sort_in_time_order():
    earlier = rules.slot_for(datetime(2026, 1, 2, tzinfo=UTC), NOW)
    later = rules.slot_for(datetime(2026, 10, 1, tzinfo=UTC), NOW)
    assert earlier < later


def test_output_prefix_is_a_folder_per_slot():
    assert rules.output_prefix("b", "20261124T190000Z") == "gs://b/20261124T190000Z/"


MAX = timedelta(hours=26)


@pytest.mark.parametrize(
    ("completed", "metadata", "job", "problem"),
    [
        (None, False, True, "no completed snapshot"),
        (NOW - timedelta(hours=27), True, True, "older than"),
        (NOW - timedelta(hours=1), False, True, "no export metadata"),
        (NOW - timedelta(hours=1), True, None, "not found"),
        (NOW - timedelta(hours=1), True, False, "paused or disabled"),
    ],
)
def test_each_broken_promise_is_named(completed, metadata, job, problem):
    verdict = rules.verify(completed, metadata, job, NOW, MAX)
    assert not verdict.ok
    assert any(problem in p for p in verdict.problems)


def test_a_fresh_complete_snapshot_with_an_enabled_job_passes():
    assert rules.verify(NOW - timedelta(hours=25), True, True, NOW, MAX).ok


def test_without_a_configured_job_only_production_reports_it_missing():
    from orderpally.backups.schedule_check import snapshot_job_state

    assert snapshot_job_state("", is_production=True) is None
    assert snapshot_job_state("", is_production=False) is True


def test_snapshots_are_verified_at_least_hourly():
    """A daily check of a 26-hour threshold lets a day with no snapshot pass; an hourly one does not."""
    from croniter import croniter

    import local_stack

    cron = next(e.trigger["cron"] for e in local_stack.load_catalogue() if e.entry_point == "verify_snapshots")
    start = datetime(2026, 12, 1, tzinfo=ZoneInfo("Asia/Taipei"))
    fires = croniter(cron, start)
    times = [fires.get_next(datetime) for _ in range(48)]
    assert max(b - a for a, b in itertools.pairwise(times)) <= timedelta(hours=1)


def test_a_slot_names_the_moment_it_was_taken():
    moment = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    assert rules.slot_time(rules.slot_for(moment, moment)) == moment


def test_a_slot_is_taken_unless_it_failed_or_its_claim_went_stale():
    timeout = timedelta(minutes=10)
    assert rules.slot_taken({"status": "completed", "claimed_at": NOW - timedelta(days=1)}, NOW, timeout)
    assert rules.slot_taken({"status": "running", "claimed_at": NOW - timedelta(days=1)}, NOW, timeout)
    assert rules.slot_taken({"status": "starting", "claimed_at": NOW - timedelta(minutes=9)}, NOW, timeout)
    assert not rules.slot_taken({"status": "starting", "claimed_at": NOW - timedelta(minutes=11)}, NOW, timeout)
    assert not rules.slot_taken({"status": "starting"}, NOW, timeout)
    assert not rules.slot_taken({"status": "failed", "claimed_at": NOW}, NOW, timeout)

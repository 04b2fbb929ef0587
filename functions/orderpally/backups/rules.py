"""Snapshot slots and freshness: plain rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SLOT_FORMAT = "%Y%m%dT%H%M%SZ"


def slot_for(schedule_time: datetime | None, now: datetime) -> str:
    """The snapshot slot: Cloud Scheduler's scheduled time (identical on a retry or a
    double fire), else the current minute, as a UTC timestamp that sorts in time order."""
    moment = schedule_time if schedule_time is not None else now.replace(second=0, microsecond=0)
    return moment.astimezone(UTC).strftime(SLOT_FORMAT)


def slot_time(slot: str) -> datetime:
    """The moment a slot's snapshot was taken of: what its freshness is counted from."""
    return datetime.strptime(slot, SLOT_FORMAT).replace(tzinfo=UTC)


def slot_taken(record: dict, now: datetime, claim_timeout: timedelta) -> bool:
    """Does the slot's record stop another export? Not when it failed, nor when its claim is
    older than `claim_timeout` with no outcome (its claimer crashed)."""
    claimed_at = record.get("claimed_at")
    stale = record.get("status") == "starting" and (claimed_at is None or claimed_at < now - claim_timeout)
    return record.get("status") != "failed" and not stale


def parse_schedule_time(header: str | None) -> datetime | None:
    """`X-CloudScheduler-ScheduleTime` (RFC 3339), or None when absent or unreadable."""
    if not header:
        return None
    try:
        parsed = datetime.fromisoformat(header.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def output_prefix(bucket: str, slot: str) -> str:
    return f"gs://{bucket}/{slot}/"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...]


def verify(
    newest_completed_at: datetime | None,
    newest_has_metadata: bool,
    job_enabled: bool | None,
    now: datetime,
    max_age: timedelta,
) -> Verdict:
    """Is the backup promise being kept right now?"""
    problems = []
    if newest_completed_at is None:
        problems.append("no completed snapshot")
    elif now - newest_completed_at > max_age:
        problems.append(f"newest snapshot is older than {max_age}")
    if newest_completed_at is not None and not newest_has_metadata:
        problems.append("newest snapshot has no export metadata")
    if job_enabled is None:
        problems.append("snapshot scheduler job not found")
    elif not job_enabled:
        problems.append("snapshot scheduler job is paused or disabled")
    return Verdict(ok=not problems, problems=tuple(problems))

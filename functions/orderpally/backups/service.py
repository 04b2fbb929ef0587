"""Taking and verifying snapshots, with a record of each in Firestore.

`ops_snapshots/{slot}` (see `store`) holds one record per slot: a second fire of the same
slot finds it and starts nothing (one export per slot).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import leases, structured_logging
from orderpally.backups import rules, store
from orderpally.backups.exporters import Exporter, ExportStarted

if TYPE_CHECKING:
    from google.cloud.firestore import Client

# A claim older than this without an outcome is taken to have crashed.
CLAIM_TIMEOUT = timedelta(minutes=10)
ALERT_KEY = "alert"
ALERT_BACKUP = "backup-verification-failed"

_log = structured_logging.get_logger("orderpally.backups")


def take_snapshot(db: Client, exporter: Exporter, slot: str, now: datetime) -> dict:
    """Starts the slot's export unless it already ran; returns the slot's record."""
    claim = store.claim_slot(db, slot, now, CLAIM_TIMEOUT, lambda record: rules.slot_taken(record, now, CLAIM_TIMEOUT))
    if not claim.taken:  # started, or being started by another fire
        structured_logging.log(_log, logging.INFO, "snapshot slot already taken", slot=slot)
        shown = {k: v for k, v in claim.entry.items() if k != leases.LEASE_FIELD}  # the claim's own bookkeeping
        return {**shown, "duplicate": True}
    try:
        started = exporter.start(slot)
    except Exception as exc:
        store.record_start_failed(db, slot, type(exc).__name__)
        structured_logging.log(
            _log, logging.ERROR, "snapshot export failed to start", slot=slot, error_type=type(exc).__name__
        )
        raise
    record: dict[str, Any] = {
        "status": "completed" if started.done else "running",
        "output_uri": started.output_uri,
        "operation": started.operation,
        "started_at": now,
        "completed_at": now if started.done else None,
    }
    written = store.record_started(db, slot, record)
    structured_logging.log(_log, logging.INFO, "snapshot export started", slot=slot, status=record["status"])
    return {"slot": slot, **written, "duplicate": False}


def _newest(db: Client) -> tuple[str, dict] | None:
    for slot, record in store.newest(db, 10):
        if record.get("status") in ("completed", "running"):
            return slot, record
    return None


def verify_snapshots(
    db: Client, exporter: Exporter, job_enabled: bool | None, now: datetime, max_age: timedelta
) -> rules.Verdict:
    """Checks the newest snapshot (settling a running export) and the schedule behind it."""
    newest = _newest(db)
    # Freshness counts from the slot, when the data was exported, not from when an export
    # was last seen finished: a verifier that settles a running export would otherwise
    # give it its own time, and a missed day could still pass.
    taken_at, has_metadata = None, False
    if newest is not None:
        slot, record = newest
        started = ExportStarted(record["output_uri"], record.get("operation"), record["status"] == "completed")
        finished, succeeded = exporter.check(started)
        if record["status"] == "running" and finished:
            record["status"] = "completed" if succeeded else "failed"
            record["completed_at"] = now if succeeded else None
            store.record_outcome(db, slot, record["status"], record["completed_at"])
        if record["status"] == "completed":
            taken_at = rules.slot_time(slot)
            has_metadata = succeeded
    verdict = rules.verify(taken_at, has_metadata, job_enabled, now.astimezone(UTC), max_age)
    if verdict.ok:
        structured_logging.log(_log, logging.INFO, "backups verified")
    else:
        # A log-based metric on this field drives the alert policy.
        structured_logging.log(
            _log,
            logging.ERROR,
            "backup verification failed",
            problems=list(verdict.problems),
            **{ALERT_KEY: ALERT_BACKUP},
        )
    return verdict


def last_completed(
    db: Client, *, taken_after: datetime | None, taken_before: datetime | None, scan: int = 60
) -> tuple[str, dict] | None:
    """(slot, record) of the newest completed snapshot whose slot is after `taken_after` and before
    `taken_before` (each when given), among the newest `scan` slots: for an account, the last
    snapshot taken while its data existed."""
    for slot, record in store.newest(db, scan):
        taken_at = rules.slot_time(slot)
        if record.get("status") != "completed" or (taken_before and taken_at >= taken_before):
            continue
        return (slot, record) if not taken_after or taken_at >= taken_after else None
    return None


def verdict_body(verdict: rules.Verdict) -> dict:
    return {"status": "ok" if verdict.ok else "failed", **asdict(verdict)}

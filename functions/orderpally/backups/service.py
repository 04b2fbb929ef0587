"""Taking and verifying snapshots, with a record of each in Firestore.

`ops_snapshots/{slot}` holds one record per slot: a second fire of the same
slot finds it and starts nothing (one export per slot).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from orderpally import structured_logging
from orderpally.backups import rules
from orderpally.backups.exporters import Exporter, ExportStarted

SNAPSHOTS = "ops_snapshots"
# A claim older than this without an outcome is taken to have crashed.
CLAIM_TIMEOUT = timedelta(minutes=10)
ALERT_KEY = "alert"
ALERT_BACKUP = "backup-verification-failed"

_log = structured_logging.get_logger("orderpally.backups")


def _claim(db: Any, slot: str, now: datetime) -> dict | None:
    """Claims the slot; returns the existing record instead when the slot is taken."""
    from google.cloud import firestore

    ref = db.collection(SNAPSHOTS).document(slot)

    @firestore.transactional
    def claim(transaction: Any) -> dict | None:
        snapshot = ref.get(transaction=transaction)
        if snapshot.exists:
            record = snapshot.to_dict() or {}
            claimed_at = record.get("claimed_at")
            stale = record.get("status") == "starting" and (claimed_at is None or claimed_at < now - CLAIM_TIMEOUT)
            if record.get("status") != "failed" and not stale:
                return record
        transaction.set(
            ref, {"slot": slot, "status": "starting", "claimed_at": now, "attempts": firestore.Increment(1)}
        )
        return None

    return claim(db.transaction())


def take_snapshot(db: Any, exporter: Exporter, slot: str, now: datetime) -> dict:
    """Starts the slot's export unless it already ran; returns the slot's record."""
    from google.cloud import firestore

    existing = _claim(db, slot, now)
    if existing is not None:
        structured_logging.log(_log, logging.INFO, "snapshot slot already taken", slot=slot)
        return {**existing, "duplicate": True}
    ref = db.collection(SNAPSHOTS).document(slot)
    try:
        started = exporter.start(slot)
    except Exception as exc:
        ref.update({"status": "failed", "error_type": type(exc).__name__, "updated_at": firestore.SERVER_TIMESTAMP})
        structured_logging.log(
            _log, logging.ERROR, "snapshot export failed to start", slot=slot, error_type=type(exc).__name__
        )
        raise
    record = {
        "status": "completed" if started.done else "running",
        "output_uri": started.output_uri,
        "operation": started.operation,
        "started_at": now,
        "completed_at": now if started.done else None,
        "updated_at": firestore.SERVER_TIMESTAMP,
    }
    ref.update(record)
    structured_logging.log(_log, logging.INFO, "snapshot export started", slot=slot, status=record["status"])
    return {"slot": slot, **record, "duplicate": False}


def _newest(db: Any) -> tuple[str, dict] | None:
    from google.cloud import firestore

    query = db.collection(SNAPSHOTS).order_by("slot", direction=firestore.Query.DESCENDING).limit(10)
    for snap in query.stream():
        record = snap.to_dict() or {}
        if record.get("status") in ("completed", "running"):
            return snap.id, record
    return None


def verify_snapshots(
    db: Any, exporter: Exporter, job_enabled: bool | None, now: datetime, max_age: timedelta
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
            db.collection(SNAPSHOTS).document(slot).update(
                {"status": record["status"], "completed_at": record["completed_at"]}
            )
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


def verdict_body(verdict: rules.Verdict) -> dict:
    return {"status": "ok" if verdict.ok else "failed", **asdict(verdict)}

"""The snapshots' Firestore: `ops_snapshots/{slot}`, one record per slot, and every read and write of it.

A second fire of the same slot finds the record (or the first fire's live lease on it) and
starts nothing (one export per slot).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import leases

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference

SNAPSHOTS = "ops_snapshots"


def _ref(db: Client, slot: str) -> DocumentReference:
    return db.collection(SNAPSHOTS).document(slot)


def claim_slot(
    db: Client, slot: str, now: datetime, lease: timedelta, is_taken: Callable[[dict[str, Any]], bool]
) -> leases.Claim:
    """Leases the slot to this run in one transaction, unless its record `is_taken` (then
    `finished` is that record) or another run's lease on it is live (`busy`)."""
    from google.cloud import firestore

    return leases.claim(
        db,
        _ref(db, slot),
        now,
        lease,
        finished=lambda record, exists: record if exists and is_taken(record) else None,
        fields=lambda record: {
            "slot": slot,
            "status": "starting",
            "claimed_at": now,
            "attempts": firestore.Increment(1),
        },
    )


def record_start_failed(db: Client, slot: str, error_type: str) -> None:
    """The export did not start: the slot's lease ends, so the scheduler's retry can take it at once."""
    from google.cloud import firestore

    leases.release(None, _ref(db, slot), status="failed", error_type=error_type, updated_at=firestore.SERVER_TIMESTAMP)


def record_started(db: Client, slot: str, record: dict[str, Any]) -> dict[str, Any]:
    """What the export's start said, stamped with the server's time; returns what was written."""
    from google.cloud import firestore

    written = {**record, "updated_at": firestore.SERVER_TIMESTAMP}
    _ref(db, slot).update(written)
    return written


def record_outcome(db: Client, slot: str, status: str, completed_at: datetime | None) -> None:
    _ref(db, slot).update({"status": status, "completed_at": completed_at})


def newest(db: Client, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(slot, record) of the `limit` latest slots, the newest first."""
    from google.cloud import firestore

    query = db.collection(SNAPSHOTS).order_by("slot", direction=firestore.Query.DESCENDING).limit(limit)
    return [(snap.id, snap.to_dict() or {}) for snap in query.stream()]

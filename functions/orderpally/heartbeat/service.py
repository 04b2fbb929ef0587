"""Heartbeat: the scheduler publishes, a topic function records, health reports the age.

Small, but it proves the whole event path (Cloud Scheduler -> function ->
Pub/Sub -> push subscription -> function -> Firestore) is alive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic

MESSAGE_TYPE = "heartbeat.emitted"
DOCUMENT = ("ops", "heartbeat")


class Heartbeat(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    emitted_at: datetime
    source: str = pydantic.Field(default="scheduler", max_length=50)


def new_heartbeat(now: datetime, source: str = "scheduler") -> Heartbeat:
    return Heartbeat(emitted_at=now.astimezone(UTC), source=source)


def is_newer(candidate: datetime, current: datetime | None) -> bool:
    """Out-of-order deliveries must not move the recorded heartbeat backwards."""
    return current is None or candidate > current


def record(db: Any, beat: Heartbeat, event_id: str) -> bool:
    """Stores `beat` unless a newer one is already stored; returns whether it was stored."""
    from google.cloud import firestore

    ref = db.collection(DOCUMENT[0]).document(DOCUMENT[1])

    @firestore.transactional
    def store(transaction: Any) -> bool:
        snapshot = ref.get(transaction=transaction)
        current = (snapshot.to_dict() or {}).get("emitted_at") if snapshot.exists else None
        if not is_newer(beat.emitted_at, current):
            return False
        transaction.set(
            ref,
            {
                "emitted_at": beat.emitted_at,
                "source": beat.source,
                "event_id": event_id,
                "recorded_at": firestore.SERVER_TIMESTAMP,
            },
        )
        return True

    return store(db.transaction())


def latest(db: Any, now: datetime) -> dict | None:
    snapshot = db.collection(DOCUMENT[0]).document(DOCUMENT[1]).get()
    if not snapshot.exists:
        return None
    data = snapshot.to_dict() or {}
    emitted = data.get("emitted_at")
    return {
        "emitted_at": emitted.isoformat() if emitted else None,
        "age_seconds": round((now - emitted).total_seconds(), 1) if emitted else None,
    }

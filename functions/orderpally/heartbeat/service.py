"""Heartbeat: the scheduler publishes, a topic function records, health reports the age.

Small, but it proves the whole event path (Cloud Scheduler -> function ->
Pub/Sub -> push subscription -> function -> Firestore) is alive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pydantic

from orderpally.heartbeat import store
from orderpally.heartbeat.store import DOCUMENT as DOCUMENT  # where the latest beat is kept

if TYPE_CHECKING:
    from google.cloud.firestore import Client

MESSAGE_TYPE = "heartbeat.emitted"


class Heartbeat(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    emitted_at: datetime
    source: str = pydantic.Field(default="scheduler", max_length=50)


def new_heartbeat(now: datetime, source: str = "scheduler") -> Heartbeat:
    return Heartbeat(emitted_at=now.astimezone(UTC), source=source)


def is_newer(candidate: datetime, current: datetime | None) -> bool:
    """Out-of-order deliveries must not move the recorded heartbeat backwards."""
    return current is None or candidate > current


def record(db: Client, beat: Heartbeat, event_id: str) -> bool:
    """Stores `beat` unless a newer one is already stored; returns whether it was stored."""
    return store.replace_if(
        db,
        lambda current: is_newer(beat.emitted_at, current),
        {"emitted_at": beat.emitted_at, "source": beat.source, "event_id": event_id},
    )


def latest(db: Client, now: datetime) -> dict | None:
    data = store.load(db)
    if data is None:
        return None
    emitted = data.get("emitted_at")
    return {
        "emitted_at": emitted.isoformat() if emitted else None,
        "age_seconds": round((now - emitted).total_seconds(), 1) if emitted else None,
    }

"""One Firestore lease: a document that one worker at a time may hold until a time.

Event ledgers, mail deliveries, notice fan-outs, deletion jobs and incident intakes all
follow the same steps in one transaction: read the document, stop if its work is
finished, stop if another worker's lease is still live, else write a new lease with the
claim's fields. A worker that dies simply lets its lease run out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

LEASE_FIELD = "lease_until"


@dataclass(frozen=True)
class Claim:
    """What a claim found. `taken` only when this worker now holds the lease."""

    entry: dict[str, Any] = field(default_factory=dict)  # the document as read (and as claimed, when taken)
    exists: bool = False
    finished: Any = None  # not None: the work is already settled; nothing was written
    busy: bool = False  # another worker's lease is live; nothing was written

    @property
    def taken(self) -> bool:
        return self.finished is None and not self.busy


def held(entry: Mapping[str, Any], now: datetime, lease_field: str = LEASE_FIELD) -> bool:
    """Whether someone's lease on the entry is still live at `now`."""
    until = entry.get(lease_field)
    return until is not None and until > now


def claim(
    db: Any,
    ref: Any,
    now: datetime,
    duration: timedelta,
    *,
    finished: Callable[[dict[str, Any], bool], Any] = lambda entry, exists: None,
    fields: Callable[[dict[str, Any]], dict[str, Any]] = lambda entry: {},
    lease_field: str = LEASE_FIELD,
) -> Claim:
    """Takes the lease on `ref` in one transaction.

    `finished(entry, exists)` returns a value (any but None) when there is nothing left to do;
    `fields(entry)` gives what the claim writes beside the lease (merged into the document,
    which is created when missing).
    """
    from google.cloud import firestore

    @firestore.transactional
    def take(transaction: Any) -> Claim:
        snapshot = ref.get(transaction=transaction)
        entry = (snapshot.to_dict() or {}) if snapshot.exists else {}
        done = finished(entry, snapshot.exists)
        if done is not None:
            return Claim(entry, snapshot.exists, finished=done)
        if held(entry, now, lease_field):
            return Claim(entry, snapshot.exists, busy=True)
        update = {**fields(entry), lease_field: now + duration}
        transaction.set(ref, update, merge=True)
        return Claim({**entry, **update}, True)

    return take(db.transaction())


def release(writer: Any, ref: Any, lease_field: str = LEASE_FIELD, **fields: Any) -> None:
    """Ends the lease, writing `fields` with it, through a batch or transaction (or the
    document itself when `writer` is None)."""
    update = {**fields, lease_field: None}
    if writer is None:
        ref.set(update, merge=True)
    else:
        writer.set(ref, update, merge=True)

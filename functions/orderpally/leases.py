"""One Firestore lease: a document that one worker at a time may hold until a time.

Event ledgers, mail deliveries, notice fan-outs, deletion jobs and incident intakes all
follow the same steps in one transaction: read the document, stop if its work is
finished, stop if another worker's lease is still live, else write a new lease with the
claim's fields. A worker that dies simply lets its lease run out.

`create` is the one-write form for short, hot locks that hold nothing but the lease (the
audit chain's linker): the document exists only while someone holds it.
"""

from __future__ import annotations

import contextlib
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


def create(db: Any, ref: Any, now: datetime, duration: timedelta, lease_field: str = LEASE_FIELD) -> bool:
    """Takes a lease that is the whole document, in one write: whether this worker now holds it.

    While the document exists someone holds it; a holder that crashed leaves one whose lease has
    run out, which is deleted (only as read, not one a faster worker took meanwhile) so that a
    later try can take it. The holder lets go with `drop`.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound

    try:
        ref.create({lease_field: now + duration})
        return True
    except AlreadyExists:
        found = ref.get()
        if found.exists and not held(found.to_dict() or {}, now, lease_field):
            with contextlib.suppress(FailedPrecondition, NotFound):
                ref.delete(option=db.write_option(last_update_time=found.update_time))
        return False


def drop(ref: Any) -> None:
    """Lets go of a lease taken with `create`."""
    ref.delete()

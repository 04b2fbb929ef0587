"""A use case's writes, all or nothing: the transaction or batch a service runs its store calls in.

Services pass `work` (a function of the transaction or batch) to their store, which runs it
here; the store functions `work` calls write through what they are given, so the change, its
audit entry and its mail commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, DocumentSnapshot, Transaction, WriteBatch

T = TypeVar("T")


def in_transaction(db: Client, work: Callable[[Transaction], T]) -> T:
    """Runs `work` in a Firestore transaction, again from the start when it contends."""
    from google.cloud import firestore

    return firestore.transactional(work)(db.transaction())


def in_batch(db: Client, work: Callable[[WriteBatch], T]) -> T:
    """Commits what `work` writes through one batch, all or nothing; returns what it returns."""
    batch = db.batch()
    result = work(batch)
    batch.commit()
    return result


# Reads and conditional writes of one document before `if_unchanged` gives up (as contended).
UNCHANGED_ATTEMPTS = 10


def if_unchanged(
    db: Client,
    ref: DocumentReference,
    decide: Callable[[DocumentSnapshot], tuple[T, Callable[[WriteBatch, Any], None] | None]],
) -> T:
    """An optimistic read-modify-write of one document that many callers change at once.

    Transactions on such a document (a double click, parallel uploads) contend under
    Firestore's locks until they give up. Here `decide(snapshot)` gives its result and what to
    write, `write(batch, unchanged)`, which must update `ref` with `option=unchanged`: the batch
    commits only if `ref` is as it was read, else it is read and decided again. A `write` of
    None writes nothing. Raises Aborted (a contended write, retried by the caller's caller)
    when the document kept changing."""
    from google.api_core.exceptions import Aborted, FailedPrecondition

    for _ in range(UNCHANGED_ATTEMPTS):
        snapshot = ref.get()
        result, write = decide(snapshot)
        if write is None:
            return result
        batch = db.batch()
        write(batch, db.write_option(last_update_time=snapshot.update_time))
        try:
            batch.commit()
        except FailedPrecondition:
            continue  # changed since the read: read again
        return result
    raise Aborted(f"{ref.id} kept changing while it was written")

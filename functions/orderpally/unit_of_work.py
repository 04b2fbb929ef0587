"""A use case's writes, all or nothing: the transaction or batch a service runs its store calls in.

Services pass `work` (a function of the transaction or batch) to their store, which runs it
here; the store functions `work` calls write through what they are given, so the change, its
audit entry and its mail commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction, WriteBatch

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

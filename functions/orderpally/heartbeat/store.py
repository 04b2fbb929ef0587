"""The heartbeat's Firestore: the one document `ops/heartbeat`, read and written here only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction

DOCUMENT = ("ops", "heartbeat")


def _ref(db: Client) -> DocumentReference:
    return db.collection(DOCUMENT[0]).document(DOCUMENT[1])


def replace_if(db: Client, should_replace: Callable[[datetime | None], bool], fields: dict[str, Any]) -> bool:
    """In one transaction: reads the stored `emitted_at`, and writes `fields` (with the server's
    `recorded_at`) in place of the document when `should_replace` says so. Returns whether it did."""
    from google.cloud import firestore

    ref = _ref(db)

    @firestore.transactional
    def store(transaction: Transaction) -> bool:
        snapshot = ref.get(transaction=transaction)
        current = (snapshot.to_dict() or {}).get("emitted_at") if snapshot.exists else None
        if not should_replace(current):
            return False
        transaction.set(ref, {**fields, "recorded_at": firestore.SERVER_TIMESTAMP})
        return True

    return store(db.transaction())


def load(db: Client) -> dict[str, Any] | None:
    snapshot = _ref(db).get()
    return (snapshot.to_dict() or {}) if snapshot.exists else None

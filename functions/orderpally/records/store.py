"""The records requests' Firestore: their collection, and every read, write and query of it.

`records_requests/{request_id}`   one records request, from queued to ready

The archive also reads the account's audit trail (`orderpally.audit`'s), the incidents it
reported and the mails sent to it; those reads are here too, so that the service touches
no Firestore of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderpally.unit_of_work import in_transaction as in_transaction  # the service runs its work through the store

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference

RECORDS = "records_requests"


def ref(db: Client, request_id: str) -> DocumentReference:
    return db.collection(RECORDS).document(request_id)


def create(writer: Any, db: Client, request_id: str, record: dict[str, Any]) -> None:
    """Creates the request through `writer` (a batch or transaction): it commits with what else that writes."""
    writer.create(ref(db, request_id), record)


def load(db: Client, request_id: str) -> dict[str, Any] | None:
    return ref(db, request_id).get().to_dict()


def queued(db: Client, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` requests still waiting for their build."""
    from google.cloud.firestore import FieldFilter

    snaps = db.collection(RECORDS).where(filter=FieldFilter("status", "==", "queued")).limit(limit).stream()
    return [snap.to_dict() or {} for snap in snaps]

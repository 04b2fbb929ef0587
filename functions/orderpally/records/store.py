"""The records requests' Firestore: their collection, and every read, write and query of it.

`records_requests/{request_id}`   one records request, from queued to ready

The archive also reads the account's audit trail (`orderpally.audit`'s), the incidents it
reported and the mails sent to it; those reads are here too, so that the service touches
no Firestore of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from orderpally import audit

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction

RECORDS = "records_requests"

T = TypeVar("T")


def in_transaction(db: Client, work: Callable[[Transaction], T]) -> T:
    """Runs `work` in a Firestore transaction, again from the start when it contends."""
    from google.cloud import firestore

    return firestore.transactional(work)(db.transaction())


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


def audit_entries(account_id: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """The account's audit trail in [start, end), once every pending entry is linked."""
    from google.cloud.firestore import FieldFilter

    audit.settle(audit.account_chain(account_id))
    trail = (
        audit.trail(account_id).where(filter=FieldFilter("at", ">=", start)).where(filter=FieldFilter("at", "<", end))
    )
    for snap in trail.stream():
        yield snap.to_dict() or {}


# Stand-ins until incidents and messaging expose these reads themselves (#16): each queries
# another capability's collection by its name, which only that capability should do.


def incidents_reported_by(db: Client, account_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(reference, incident) of every incident the account reported."""
    from google.cloud.firestore import FieldFilter

    from orderpally.incidents.service import INCIDENTS

    query = db.collection(INCIDENTS).where(filter=FieldFilter("reporter_account_id", "==", account_id))
    for snap in query.stream():
        yield snap.id, snap.to_dict() or {}


def deliveries_to(db: Client, account_id: str) -> Iterator[dict[str, Any]]:
    """Every mail delivery recorded for the account."""
    from google.cloud.firestore import FieldFilter

    from orderpally.messaging.delivery import DELIVERIES

    for snap in db.collection(DELIVERIES).where(filter=FieldFilter("account_id", "==", account_id)).stream():
        yield snap.to_dict() or {}

"""The mail pipeline's Firestore: its two collections, and every read, write, query and transaction on them.

    email_deliveries/{sha256(idempotency_key)}  one mail's delivery ledger entry: its lease,
                                                status, attempts and the relay's reply
    mail_outbox/{sha256(idempotency_key)}       a mail request staged with the change it
                                                announces, until it is published

What a delivery claims, sends and settles is `orderpally.messaging.delivery`'s; what is staged
and redriven is `orderpally.messaging.requests`'.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from orderpally import leases, unit_of_work

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference

DELIVERIES = "email_deliveries"
OUTBOX = "mail_outbox"
# Long after Pub/Sub's 7-day redelivery window and any resend a capability might make.
LEDGER_TTL = timedelta(days=400)

T = TypeVar("T")


def key_digest(idempotency_key: str) -> str:
    """What a mail's ledger entry and staged request are named by."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def delivery_id(idempotency_key: str) -> str:
    return key_digest(idempotency_key)


def _delivery_ref(db: Client, idempotency_key: str) -> DocumentReference:
    return db.collection(DELIVERIES).document(delivery_id(idempotency_key))


def _staged_ref(db: Client, idempotency_key: str) -> DocumentReference:
    return db.collection(OUTBOX).document(key_digest(idempotency_key))


# --- the delivery ledger ----------------------------------------------------------------


def _expiring(lease: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A claim's write: the lease's fields, and the time the ledger entry may go (TTL policy)."""
    return {**lease, "expire_at": now + LEDGER_TTL}


def create_entries(db: Client, claims: Sequence[tuple[str, dict[str, Any]]], now: datetime) -> bool:
    """Creates the ledger entry of each (idempotency key, lease fields) in one batch; False, with
    nothing written, when any of them exists already."""
    from google.api_core import exceptions

    def create_all(batch: Any) -> None:
        for idempotency_key, lease in claims:
            batch.create(_delivery_ref(db, idempotency_key), _expiring(lease, now))

    with contextlib.suppress(exceptions.AlreadyExists):
        unit_of_work.in_batch(db, create_all)
        return True
    return False


def lease_entries(
    db: Client,
    idempotency_keys: Sequence[str],
    now: datetime,
    choose: Callable[[list[dict[str, Any]]], tuple[T, list[dict[str, Any] | None]]],
) -> T:
    """Reads the keys' ledger entries and writes the leases `choose` takes, in one transaction
    (run again from the start when it contends); returns what `choose` returned.

    `choose(entries)` gets each key's entry ({} when it has none), in the order of the keys,
    and returns its result and, per key, the lease fields to merge into the entry (None: the
    entry is left as it is).
    """
    refs = [_delivery_ref(db, key) for key in idempotency_keys]

    def take(transaction: Any) -> T:
        found = {snap.id: snap.to_dict() or {} for snap in transaction.get_all(refs)}
        result, writes = choose([found.get(ref.id, {}) for ref in refs])
        for ref, lease in zip(refs, writes, strict=True):
            if lease is not None:
                transaction.set(ref, _expiring(lease, now), merge=True)
        return result

    return unit_of_work.in_transaction(db, take)


def settle(db: Client, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Ends the lease of each (idempotency key, outcome fields), writing the fields with it, in one commit."""
    batch = db.batch()
    for idempotency_key, fields in outcomes:
        leases.release(batch, _delivery_ref(db, idempotency_key), **fields)
    batch.commit()


def deliveries_to(db: Client, account_id: str) -> Iterator[dict[str, Any]]:
    """Every mail delivery recorded for the account (its records request lists them)."""
    from google.cloud.firestore import FieldFilter

    for snap in db.collection(DELIVERIES).where(filter=FieldFilter("account_id", "==", account_id)).stream():
        yield snap.to_dict() or {}


def record_of(db: Client, idempotency_key: str) -> dict[str, Any]:
    """The delivery record of the mail requested under `idempotency_key`; empty when there is none (yet)."""
    return _delivery_ref(db, idempotency_key).get().to_dict() or {}


# --- the mail outbox --------------------------------------------------------------------


def stage(writer: Any, db: Client, idempotency_key: str, record: dict[str, Any]) -> None:
    """Writes the staged request through `writer` (a transaction or batch)."""
    writer.set(_staged_ref(db, idempotency_key), record)


def unstage(db: Client, idempotency_key: str) -> None:
    _staged_ref(db, idempotency_key).delete()


def staged_by(db: Client, cutoff: datetime, limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Up to `limit` staged requests staged at `cutoff` or before, as (document id, document),
    read as they are iterated."""
    from google.cloud.firestore import FieldFilter

    stale = db.collection(OUTBOX).where(filter=FieldFilter("staged_at", "<=", cutoff))
    for snap in stale.limit(limit).stream():
        yield snap.id, snap.to_dict() or {}

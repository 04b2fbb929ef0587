"""The archive quotas (`archive_quotas/{account_id}`) and the build fields on a request:
the only archives module that touches Firestore.

Each capability owns its request documents and hands their references in; this module
writes only the quota slots and a build's lease and settlement fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orderpally import leases

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction

QUOTAS = "archive_quotas"


def _quota_ref(db: Client, account_id: str) -> DocumentReference:
    return db.collection(QUOTAS).document(account_id)


def quota_slot(
    transaction: Transaction,
    db: Client,
    account_id: str,
    kind: str,
    request_ref: Callable[[str], DocumentReference],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Inside `transaction`: the account's quota slot of `kind`, and the request it names as
    its last (found by `request_ref`, the owning capability's), if any."""
    snap = _quota_ref(db, account_id).get(transaction=transaction)
    slot = ((snap.to_dict() or {}) if snap.exists else {}).get(kind)
    active = None
    if slot and slot.get("active_id"):
        active_snap = request_ref(slot["active_id"]).get(transaction=transaction)
        active = active_snap.to_dict() if active_snap.exists else None
    return slot, active


def quota_slot_now(db: Client, account_id: str, kind: str) -> dict[str, Any] | None:
    """The account's quota slot of `kind` as it stands, outside any transaction (for reading only)."""
    snap = _quota_ref(db, account_id).get()
    return ((snap.to_dict() or {}) if snap.exists else {}).get(kind)


def set_quota_slot(transaction: Transaction, db: Client, account_id: str, kind: str, slot: dict[str, Any]) -> None:
    transaction.set(_quota_ref(db, account_id), {"account_id": account_id, kind: slot}, merge=True)


def settle(ref: DocumentReference, fields: dict[str, Any]) -> None:
    """Writes a request's settlement (or nothing but the lease's end) and ends its build lease."""
    ref.update({**fields, leases.LEASE_FIELD: None})

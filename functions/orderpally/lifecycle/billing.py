"""The billing balance, kept from billing events (agreement 3.2(b)(ii): content is
released only when every amount due is paid).

Events for one account carry a gapless `sequence`; they are applied in order,
exactly once: an old sequence is a duplicate, a future one waits (retry) for
the missing one. Amounts are integers in the currency's minor unit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pydantic

from orderpally import events

BILLING_ACCOUNTS = "billing_accounts"
BILLING_EVENTS = "billing_events"  # sub-collection: the applied events, for the records
TOPIC = "billing-events"
MESSAGE_TYPE = "billing.event"

# How each kind moves what the customer owes.
DIRECTION = {"invoice_issued": 1, "payment_received": -1, "refund": 1, "credit_note": -1}


class BillingEvent(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    account_id: str = pydantic.Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    sequence: int = pydantic.Field(ge=1)
    kind: Literal["invoice_issued", "payment_received", "refund", "credit_note"]
    amount: int = pydantic.Field(gt=0, le=10**12)
    currency: Literal["TWD"] = "TWD"
    reference: str = pydantic.Field(min_length=1, max_length=100)  # invoice or payment id
    occurred_at: datetime


def apply(balance: int, event: BillingEvent) -> int:
    return balance + DIRECTION[event.kind] * event.amount


class OutOfOrder(events.RetryableError):
    """An earlier event of this account has not arrived yet."""


def record_event(db: Any, event: BillingEvent) -> str:
    """Applies the event once and in order; returns applied | duplicate."""
    from google.cloud import firestore

    ref = db.collection(BILLING_ACCOUNTS).document(event.account_id)

    @firestore.transactional
    def update(transaction: Any) -> str:
        snap = ref.get(transaction=transaction)
        state = snap.to_dict() or {} if snap.exists else {}
        last = int(state.get("last_sequence", 0))
        if event.sequence <= last:
            return "duplicate"
        if event.sequence > last + 1:
            raise OutOfOrder(f"waiting for sequence {last + 1}")
        balance = apply(int(state.get("balance_due", 0)), event)
        transaction.set(
            ref,
            {
                "account_id": event.account_id,
                "balance_due": balance,
                "currency": event.currency,
                "last_sequence": event.sequence,
                "updated_at": firestore.SERVER_TIMESTAMP,
            },
        )
        transaction.set(ref.collection(BILLING_EVENTS).document(str(event.sequence)), event.model_dump(mode="json"))
        return "applied"

    return update(db.transaction())


def outstanding(db: Any, account_id: str) -> tuple[int, str]:
    """(amount due, currency); nothing is due for an account with no billing yet."""
    snap = db.collection(BILLING_ACCOUNTS).document(account_id).get()
    state = snap.to_dict() or {} if snap.exists else {}
    return max(0, int(state.get("balance_due", 0))), state.get("currency", "TWD")

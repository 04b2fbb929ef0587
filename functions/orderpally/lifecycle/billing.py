"""The billing balance, kept from billing events (agreement 3.2(b)(ii): content is
released only when every amount due is paid).

Events for one account carry a gapless `sequence`; they are applied in order,
exactly once: an old sequence is a duplicate, a future one waits (retry) for
the missing one. Amounts are integers in the currency's minor unit.

A future event is not applied, but it is noted (`highest_seen`, `gap_since`): while
an account has events waiting behind a gap, what it owes is unknown, so the payment
gate refuses (409 `billing-unsettled`), and a gap older than `GAP_ALERT_AFTER` is logged
as the `billing-sequence-gap` alert on each retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import pydantic

from orderpally import events, fields, structured_logging
from orderpally.lifecycle import store
from orderpally.lifecycle.store import BILLING_ACCOUNTS as BILLING_ACCOUNTS
from orderpally.lifecycle.store import BILLING_EVENTS as BILLING_EVENTS

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction
TOPIC = "billing-events"
MESSAGE_TYPE = "billing.event"
ALERT_SEQUENCE_GAP = "billing-sequence-gap"
# Pub/Sub retries a waiting event with backoff; a gap that lasts this long is no reordering
# in transit but an event lost upstream, and an operator must replay it.
GAP_ALERT_AFTER = timedelta(minutes=30)

# How each kind moves what the customer owes.
DIRECTION = {"invoice_issued": 1, "payment_received": -1, "refund": 1, "credit_note": -1}

_log = structured_logging.get_logger("orderpally.lifecycle.billing")


class BillingEvent(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    account_id: fields.AccountId
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


@dataclass(frozen=True)
class BillingState:
    """An account's billing as stored: what it owes, and whether events wait behind a gap."""

    balance_due: int = 0
    currency: str = "TWD"
    last_sequence: int = 0
    highest_seen: int = 0
    gap_since: datetime | None = None

    @property
    def outstanding(self) -> int:
        return max(0, self.balance_due)

    @property
    def waiting_for(self) -> int | None:
        """The missing sequence number while later events wait; None when nothing waits."""
        return self.last_sequence + 1 if self.highest_seen > self.last_sequence else None

    @classmethod
    def from_document(cls, data: dict | None) -> BillingState:
        data = data or {}
        last = int(data.get("last_sequence", 0))
        return cls(
            balance_due=int(data.get("balance_due", 0)),
            currency=data.get("currency", "TWD"),
            last_sequence=last,
            highest_seen=max(last, int(data.get("highest_seen", 0))),
            gap_since=data.get("gap_since"),
        )


def decide(state: BillingState, event: BillingEvent, now: datetime) -> tuple[str, dict]:
    """What an arriving event does to the stored state: (applied | duplicate | waiting, the fields to write)."""
    if event.sequence <= state.last_sequence:
        return "duplicate", {}
    highest = max(state.highest_seen, event.sequence)
    if event.sequence > state.last_sequence + 1:
        return "waiting", {"highest_seen": highest, "gap_since": state.gap_since or now}
    caught_up = event.sequence >= highest
    return "applied", {
        "account_id": event.account_id,
        "balance_due": apply(state.balance_due, event),
        "currency": event.currency,
        "last_sequence": event.sequence,
        "highest_seen": highest,
        "gap_since": None if caught_up else state.gap_since,
    }


def gap_overdue(state: BillingState, now: datetime, threshold: timedelta = GAP_ALERT_AFTER) -> bool:
    return state.waiting_for is not None and state.gap_since is not None and now - state.gap_since >= threshold


def record_event(db: Client, event: BillingEvent, now: datetime | None = None) -> str:
    """Applies the event once and in order; returns applied | duplicate, or raises OutOfOrder
    after noting that the account's billing waits behind a gap."""
    now = now or datetime.now(UTC)
    outcome, stored, written = store.apply_billing_event(
        db,
        event.account_id,
        event.sequence,
        event.model_dump(mode="json"),
        lambda stored: decide(BillingState.from_document(stored), event, now),
    )
    state = BillingState.from_document(stored)
    if outcome != "duplicate":
        state = BillingState.from_document({**_plain(state), **written})
    fields = {"account_id": event.account_id, "sequence": event.sequence, "kind": event.kind}
    if outcome == "waiting":
        if gap_overdue(state, now):
            structured_logging.log(
                _log,
                logging.ERROR,
                "billing events wait behind a missing sequence number; replay it",
                alert=ALERT_SEQUENCE_GAP,
                waiting_for=state.waiting_for,
                gap_since=state.gap_since.isoformat() if state.gap_since else None,
                **fields,
            )
        raise OutOfOrder(f"waiting for sequence {state.waiting_for}")
    if outcome == "applied":
        # The operator's sign that an event took effect (no amounts: the staff read shows them).
        structured_logging.log(_log, logging.INFO, "billing event applied", waiting_for=state.waiting_for, **fields)
    return outcome


def _plain(state: BillingState) -> dict:
    return {
        "balance_due": state.balance_due,
        "currency": state.currency,
        "last_sequence": state.last_sequence,
        "highest_seen": state.highest_seen,
        "gap_since": state.gap_since,
    }


def read_state(db: Client, account_id: str, transaction: Transaction | None = None) -> BillingState:
    """The account's billing; inside `transaction` when given, so a concurrent event conflicts with it."""
    return BillingState.from_document(store.billing_document(db, account_id, transaction))


def outstanding(db: Client, account_id: str) -> tuple[int, str]:
    """(amount due, currency); nothing is due for an account with no billing yet."""
    state = read_state(db, account_id)
    return state.outstanding, state.currency


def applied_events(db: Client, account_id: str, limit: int = 50) -> list[dict]:
    """The most recently applied events, newest first, each with when it was applied."""
    return store.applied_billing_events(db, account_id, limit)


def has_account(db: Client, account_id: str) -> bool:
    """Has any billing event reached this account?"""
    return store.has_billing(db, account_id)

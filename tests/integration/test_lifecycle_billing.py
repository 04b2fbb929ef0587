from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orderpally import clients
from orderpally.lifecycle import billing

pytestmark = pytest.mark.usefixtures("emulators")


def event(sequence: int, kind: str, amount: int) -> billing.BillingEvent:
    return billing.BillingEvent(
        account_id="acct",
        sequence=sequence,
        kind=kind,
        amount=amount,
        reference=f"r{sequence}",
        occurred_at=datetime.now(UTC),
    )


def test_events_apply_once_and_in_order():
    db = clients.firestore_client()
    assert billing.outstanding(db, "acct") == (0, "TWD")
    assert billing.record_event(db, event(1, "invoice_issued", 1200)) == "applied"
    assert billing.record_event(db, event(1, "invoice_issued", 1200)) == "duplicate"
    with pytest.raises(billing.OutOfOrder):
        billing.record_event(db, event(3, "payment_received", 1200))
    assert billing.outstanding(db, "acct") == (1200, "TWD")
    assert billing.record_event(db, event(2, "payment_received", 200)) == "applied"
    assert billing.record_event(db, event(3, "payment_received", 1000)) == "applied"
    assert billing.outstanding(db, "acct") == (0, "TWD")
    applied = db.collection(f"{billing.BILLING_ACCOUNTS}/acct/{billing.BILLING_EVENTS}").get()
    assert sorted(int(d.id) for d in applied) == [1, 2, 3]


def test_overpayment_is_a_credit_not_a_debt():
    db = clients.firestore_client()
    billing.record_event(db, event(1, "payment_received", 500))
    assert billing.outstanding(db, "acct") == (0, "TWD")
    billing.record_event(db, event(2, "invoice_issued", 300))
    assert billing.outstanding(db, "acct") == (0, "TWD")

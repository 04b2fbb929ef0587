from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderpally import clients, web
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


# --- issue #15, finding 17 and 29: gaps in the sequence, and what operators see ------------


def test_an_event_waiting_behind_a_gap_makes_the_balance_unknown_not_zero():
    """The attack: the missing event is an invoice, the later one a payment. Until the fix the
    payment gate read 0 owed and released the content."""
    from orderpally.lifecycle import export as content_export

    db = clients.firestore_client()
    billing.record_event(db, event(1, "invoice_issued", 1000))
    billing.record_event(db, event(2, "payment_received", 1000))
    with pytest.raises(billing.OutOfOrder):
        billing.record_event(db, event(4, "payment_received", 10))  # 3, an invoice, is still on its way
    assert billing.outstanding(db, "acct") == (0, "TWD")  # as applied
    state = billing.read_state(db, "acct")
    assert state.waiting_for == 3
    with pytest.raises(web.Problem) as refused:
        content_export.check_settled(state)
    assert refused.value.slug == "billing-unsettled"

    billing.record_event(db, event(3, "invoice_issued", 500))
    # 4 has been seen but not applied: still unknown until its retry applies it.
    assert billing.read_state(db, "acct").waiting_for == 4
    assert billing.record_event(db, event(4, "payment_received", 10)) == "applied"
    state = billing.read_state(db, "acct")
    assert (state.outstanding, state.waiting_for, state.gap_since) == (490, None, None)


def test_a_gap_that_lasts_is_alerted_and_each_applied_event_is_visible(caplog):
    import logging

    db = clients.firestore_client()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    billing.record_event(db, event(1, "invoice_issued", 100), now=start)
    for minutes in (1, 10):
        with pytest.raises(billing.OutOfOrder):
            billing.record_event(db, event(3, "payment_received", 100), now=start + timedelta(minutes=minutes))

    def alerts() -> list[dict]:
        return [
            getattr(r, "fields", {})
            for r in caplog.records
            if r.levelno >= logging.ERROR and getattr(r, "fields", {}).get("alert") == billing.ALERT_SEQUENCE_GAP
        ]

    assert alerts() == []  # a reordering in transit is no alarm
    with pytest.raises(billing.OutOfOrder):
        billing.record_event(db, event(3, "payment_received", 100), now=start + timedelta(minutes=40))
    [alert] = alerts()
    assert alert["waiting_for"] == 2
    assert alert["account_id"] == "acct"
    assert billing.gap_overdue(billing.read_state(db, "acct"), start + timedelta(minutes=40))

    applied = billing.applied_events(db, "acct")
    assert [e["sequence"] for e in applied] == [1]
    assert applied[0]["applied_at"] is not None
    assert any(
        getattr(r, "fields", {}).get("sequence") == 1 and r.getMessage() == "billing event applied"
        for r in caplog.records
    )

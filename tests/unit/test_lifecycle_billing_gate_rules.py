"""The payment gate, billing sequence gaps, archive limits and the certificate's customer view, as plain rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderpally import web
from orderpally.archives import rules as limits
from orderpally.lifecycle import billing, certificates
from orderpally.lifecycle import export as content_export

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)  # 11:00 in Taipei


def event(sequence: int, kind: str = "invoice_issued", amount: int = 100) -> billing.BillingEvent:
    return billing.BillingEvent(
        account_id="a", sequence=sequence, kind=kind, amount=amount, reference="r", occurred_at=NOW
    )


def test_an_event_behind_a_gap_waits_and_marks_the_gap():
    state = billing.BillingState(balance_due=0, last_sequence=2, highest_seen=2)
    outcome, fields = billing.decide(state, event(4, "payment_received"), NOW)
    assert outcome == "waiting"
    assert fields == {"highest_seen": 4, "gap_since": NOW}
    waiting = billing.BillingState.from_document({"last_sequence": 2, **fields})
    assert waiting.waiting_for == 3


def test_the_gap_closes_only_when_every_waiting_event_is_applied():
    gap = billing.BillingState(balance_due=0, last_sequence=2, highest_seen=5, gap_since=NOW)
    outcome, fields = billing.decide(gap, event(3), NOW + timedelta(minutes=1))
    assert outcome == "applied"
    assert fields["gap_since"] == NOW  # 4 is still missing
    assert billing.BillingState.from_document(fields).waiting_for == 4
    _, fields = billing.decide(billing.BillingState.from_document(fields), event(4), NOW)
    _, fields = billing.decide(billing.BillingState.from_document(fields), event(5), NOW)
    assert fields["gap_since"] is None
    assert billing.BillingState.from_document(fields).waiting_for is None


def test_a_gap_is_overdue_after_the_threshold():
    gap = billing.BillingState(last_sequence=1, highest_seen=3, gap_since=NOW)
    assert not billing.gap_overdue(gap, NOW + billing.GAP_ALERT_AFTER - timedelta(seconds=1))
    assert billing.gap_overdue(gap, NOW + billing.GAP_ALERT_AFTER)
    assert not billing.gap_overdue(billing.BillingState(last_sequence=3, highest_seen=3), NOW + timedelta(days=1))


def test_the_gate_refuses_while_anything_is_owed_or_unknown():
    content_export.check_settled(billing.BillingState(balance_due=-50))  # a credit
    with pytest.raises(web.Problem) as refused:
        content_export.check_settled(billing.BillingState(balance_due=1))
    assert (refused.value.status, refused.value.slug) == (402, "payment-required")
    # Nothing owed as applied, but an event waits behind the missing one: it may be an invoice.
    with pytest.raises(web.Problem) as refused:
        content_export.check_settled(billing.BillingState(balance_due=0, last_sequence=2, highest_seen=3))
    assert (refused.value.status, refused.value.slug) == (409, "billing-unsettled")


def test_one_archive_of_a_kind_at_a_time():
    active = {"status": "queued", "requested_at": NOW - timedelta(minutes=5)}
    slot = {"day": "2026-03-01", "count": 1, "active_id": "x" * 20}
    with pytest.raises(web.Problem) as refused:
        limits.take(limits.EXPORTS, slot, active, "y" * 20, NOW)
    assert refused.value.slug == "archive-in-progress"
    assert refused.value.extra["in_progress"] == "x" * 20
    # Built, refused, or stuck past busy_for: the next may go.
    for done in ({"status": "ready"}, {"status": "refused"}, {**active, "requested_at": NOW - timedelta(hours=7)}):
        assert limits.take(limits.EXPORTS, slot, done, "y" * 20, NOW) == {
            "day": "2026-03-01",
            "count": 2,
            "active_id": "y" * 20,
        }


def test_a_number_a_day_in_taipei_with_the_wait_until_the_next_day():
    slot = {"day": "2026-03-01", "count": limits.EXPORTS.per_day, "active_id": "x" * 20}
    with pytest.raises(web.Problem) as refused:
        limits.take(limits.EXPORTS, slot, {"status": "ready"}, "y" * 20, NOW)
    assert refused.value.slug == "archive-limit"
    assert refused.value.headers["Retry-After"] == str(13 * 3600 + 1)  # 11:00 to midnight in Taipei
    # 16:00 UTC is already the next day in Taipei: the count starts again.
    assert limits.take(limits.EXPORTS, slot, {"status": "ready"}, "y" * 20, NOW + timedelta(hours=13))["count"] == 1


def test_the_customer_s_certificate_shows_no_account_id_and_no_hold_details():
    stored = {
        "account_id": "uid-123",
        "status": "held",
        "requested_at": NOW,
        "started_at": NOW,
        "certified_at": NOW,
        "locations": {
            "account_profile": {"kind": "document", "retention_class": "delete", "counts": {"deleted": 1}},
            "invoices": {
                "kind": "owned",
                "retention_class": "accounting_book",
                "counts": {"pseudonymised": 2},
                "retained_until_latest": "2037-04-30",
                "legal_basis": "商業會計法第38條",
                "held": {"hold_id": "h1", "reason": "police case 42 about uid-123", "authority": "Taipei DA"},
            },
        },
    }
    shown = certificates.customer_view(stored)
    text = repr(shown)
    assert "uid-123" not in text
    assert "police" not in text
    assert "Taipei DA" not in text
    assert "h1" not in text
    assert shown["locations"]["invoices"]["held"] is True
    assert shown["locations"]["account_profile"] == {
        "kind": "document",
        "retention_class": "delete",
        "counts": {"deleted": 1},
        "held": False,
    }
    assert shown["certified_at"] == NOW.isoformat()
    assert certificates.customer_view(None) == {"status": "pending", "locations": {}}

from __future__ import annotations

from datetime import UTC, datetime

import pydantic
import pytest

from orderpally.lifecycle.billing import BillingEvent, apply


def event(kind: str, amount: int, sequence: int = 1) -> BillingEvent:
    return BillingEvent(
        account_id="a", sequence=sequence, kind=kind, amount=amount, reference="r", occurred_at=datetime.now(UTC)
    )


@pytest.mark.parametrize(
    ("kind", "expected"), [("invoice_issued", 1500), ("payment_received", 500), ("refund", 1500), ("credit_note", 500)]
)
def test_each_kind_moves_the_balance_its_way(kind, expected):
    assert apply(1000, event(kind, 500)) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": 0},
        {"amount": -5},
        {"sequence": 0},
        {"currency": "USD"},
        {"kind": "gift"},
        {"account_id": "../other"},
    ],
)
def test_malformed_billing_events_are_refused(bad):
    data = {"account_id": "a", "sequence": 1, "kind": "invoice_issued", "amount": 1, "reference": "r"}
    with pytest.raises(pydantic.ValidationError):
        BillingEvent.model_validate({**data, "occurred_at": datetime.now(UTC).isoformat(), **bad})

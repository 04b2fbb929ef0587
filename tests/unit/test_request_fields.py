"""Request field types: dates as the contract writes them, moments that exist in UTC, page tokens in range."""

from __future__ import annotations

import base64
import json

import pydantic
import pytest

from orderpally import fields, web
from orderpally.access.http import account as account_http
from orderpally.incidents.service import Report
from orderpally.records.service import RecordsRange


class Dated(pydantic.BaseModel):
    day: fields.IsoDate


@pytest.mark.parametrize("value", ["20261231", "2026-1-5", 1767139200, "2026-12-31T00:00:00", "2026-02-30"])
def test_only_yyyy_mm_dd_dates_are_accepted(value):
    with pytest.raises(pydantic.ValidationError):
        Dated(day=value)


def test_a_yyyy_mm_dd_date_is_accepted():
    assert Dated(day="2026-12-31").day.isoformat() == "2026-12-31"
    assert RecordsRange.model_validate({"from": "2026-01-01", "to": "2026-02-01"}).date_to.month == 2


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_moments_outside_utc_are_a_validation_error(moment):
    with pytest.raises(pydantic.ValidationError):
        Report.model_validate({"category": "other", "description": "a long enough text", "occurred_at": moment})


@pytest.mark.parametrize("seq", [0, -1, 2**63, 10**30, True, "5"])
def test_audit_page_tokens_out_of_range_are_400(seq):
    token = base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode().rstrip("=")
    with pytest.raises(web.Problem) as refused:
        account_http._decode_token(token)
    assert refused.value.status == 400

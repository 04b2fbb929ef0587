from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from orderpally.lifecycle.rules import (
    STAFF_BASES,
    SUSPENSION_CODES,
    Basis,
    can_cancel,
    customer_termination_at,
    end_of_day,
    recently_authenticated,
    staff_termination_at,
    taipei_today,
)
from orderpally.web import Problem

# 2026-11-24 17:30 UTC is already 25 November in Taipei.
NOW = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)


def test_the_day_is_taipei_s_day():
    assert taipei_today(NOW) == date(2026, 11, 25)


def test_a_date_ends_at_taipei_midnight():
    assert end_of_day(date(2026, 12, 31)) == datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)


def test_customer_termination_now_or_at_the_end_of_a_day():
    assert customer_termination_at(None, NOW, 90) == NOW
    assert customer_termination_at(date(2026, 11, 25), NOW, 90) == end_of_day(date(2026, 11, 25))


@pytest.mark.parametrize(("day", "message"), [(date(2026, 11, 24), "past"), (date(2027, 2, 24), "at most")])
def test_customer_termination_date_limits(day, message):
    with pytest.raises(Problem, match=message) as refused:
        customer_termination_at(day, NOW, 90)
    assert refused.value.field == "termination_date"
    assert (refused.value.status, refused.value.slug) == (422, "termination-date")


def test_company_convenience_needs_notice():
    earliest = date(2026, 11, 25) + timedelta(days=30)
    assert staff_termination_at(
        Basis.COMPANY_CONVENIENCE, NOW, notice_days=30, cure_period_days=None, requested=None
    ) == (end_of_day(earliest))
    with pytest.raises(Problem, match=earliest.isoformat()):
        staff_termination_at(
            Basis.COMPANY_CONVENIENCE,
            NOW,
            notice_days=30,
            cure_period_days=None,
            requested=earliest - timedelta(days=1),
        )


def test_breach_waits_for_the_cure_period():
    at = staff_termination_at(Basis.BREACH_CURE_PERIOD, NOW, notice_days=30, cure_period_days=14, requested=None)
    assert at == end_of_day(date(2026, 12, 9))
    with pytest.raises(Problem, match="cure period"):
        staff_termination_at(Basis.BREACH_CURE_PERIOD, NOW, notice_days=30, cure_period_days=None, requested=None)


@pytest.mark.parametrize("basis", [Basis.BREACH_IMMEDIATE, Basis.NOTICE_A, Basis.PARTNER_B, Basis.LEGAL_C])
def test_immediate_bases(basis):
    assert staff_termination_at(basis, NOW, notice_days=30, cure_period_days=None, requested=None) == NOW


def test_staff_cannot_use_the_customer_s_basis():
    with pytest.raises(Problem) as refused:
        staff_termination_at(Basis.CUSTOMER_CONVENIENCE, NOW, notice_days=30, cure_period_days=None, requested=None)
    assert (refused.value.status, refused.value.slug, refused.value.field) == (422, "termination-rule", "basis")


def test_staff_may_use_every_basis_but_the_customer_s():
    assert frozenset(Basis) - {Basis.CUSTOMER_CONVENIENCE} == STAFF_BASES
    assert SUSPENSION_CODES == ("policy_1_2", "A", "B", "C")


def test_reauthentication_window():
    assert recently_authenticated(int(NOW.timestamp()) - 299, NOW, 300)
    assert not recently_authenticated(int(NOW.timestamp()) - 301, NOW, 300)
    assert not recently_authenticated(None, NOW, 300)


def test_only_a_scheduled_termination_before_its_time_can_be_cancelled():
    later = NOW + timedelta(hours=1)
    assert can_cancel("scheduled", later, NOW)
    assert not can_cancel("scheduled", NOW - timedelta(seconds=1), NOW)
    assert not can_cancel("executed", later, NOW)

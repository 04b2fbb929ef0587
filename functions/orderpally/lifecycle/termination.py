"""Termination and suspension rules (agreement 1.2, 3.1, 3.2(a)): plain data and functions.

A termination takes effect at the end of its date in Asia/Taipei (or at once),
can be cancelled until then, and cannot be undone afterwards.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

TAIPEI = ZoneInfo("Asia/Taipei")


class Basis(StrEnum):
    """Why an account ends; each names its clause."""

    CUSTOMER_CONVENIENCE = "customer_convenience"  # 3.1(a): the customer closes the account
    COMPANY_CONVENIENCE = "company_convenience"  # 3.1(a): OrderPally terminates with notice
    BREACH_CURE_PERIOD = "breach_cure_period"  # 3.1(b)(i): uncured material breach after a cure period
    BREACH_IMMEDIATE = "breach_immediate"  # 3.1(b)(i): OrderPally's right to end at once
    NOTICE_A = "notice_A"  # 3.1(b)(ii)(A): after notice, at once
    PARTNER_B = "partner_B"  # 3.1(b)(ii)(B): a third-party partner's change
    LEGAL_C = "legal_C"  # 3.1(b)(ii)(C): law or a government request


STAFF_BASES = frozenset(Basis) - {Basis.CUSTOMER_CONVENIENCE}
SUSPENSION_CODES = ("policy_1_2", "A", "B", "C")


class TerminationError(ValueError):
    """A request that breaks a termination rule; `field` names the input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def end_of_day(day: date) -> datetime:
    """The last instant of `day` in Asia/Taipei, in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=TAIPEI).astimezone(UTC) - timedelta(microseconds=1)


def taipei_today(now: datetime) -> date:
    return now.astimezone(TAIPEI).date()


def customer_termination_at(requested: date | None, now: datetime, max_days_ahead: int) -> datetime:
    """When a customer's own termination takes effect: `None` means at once."""
    if requested is None:
        return now
    today = taipei_today(now)
    if requested < today:
        raise TerminationError("The termination date cannot be in the past.", "termination_date")
    if requested > today + timedelta(days=max_days_ahead):
        latest = (today + timedelta(days=max_days_ahead)).isoformat()
        raise TerminationError(f"The termination date can be at most {latest}.", "termination_date")
    return end_of_day(requested)


def staff_termination_at(
    basis: Basis, now: datetime, *, notice_days: int, cure_period_days: int | None, requested: date | None
) -> datetime:
    """When a termination by OrderPally takes effect, by its basis."""
    if basis == Basis.COMPANY_CONVENIENCE:
        earliest = taipei_today(now) + timedelta(days=notice_days)
        day = requested or earliest
        if day < earliest:
            raise TerminationError(
                f"Termination for convenience needs {notice_days} days' notice: {earliest.isoformat()} or later.",
                "termination_date",
            )
        return end_of_day(day)
    if basis == Basis.BREACH_CURE_PERIOD:
        if not cure_period_days or cure_period_days < 1:
            raise TerminationError("A cure period of at least one day is needed.", "cure_period_days")
        return end_of_day(taipei_today(now) + timedelta(days=cure_period_days))
    if basis == Basis.CUSTOMER_CONVENIENCE:
        raise TerminationError("Staff cannot terminate on the customer's behalf.", "basis")
    return now  # immediate: breach_immediate, A, B, C


def recently_authenticated(auth_time: int | None, now: datetime, window_seconds: int) -> bool:
    """Has the caller signed in within the window (re-authentication before termination)?"""
    return auth_time is not None and now.timestamp() - auth_time <= window_seconds


def can_cancel(status: str, terminate_at: datetime, now: datetime) -> bool:
    return status == "scheduled" and now < terminate_at


def company_initiated(basis: str) -> bool:
    """Did OrderPally start this termination (3.1(a) by us, 3.1(b))? Then only staff may
    cancel or change it: nothing the customer sends changes its basis or date."""
    return basis in STAFF_BASES


def takes_effect_now(terminate_at: datetime, now: datetime) -> bool:
    """An immediate termination ends access within the request, not at the next sweep."""
    return terminate_at <= now


def account_status_with_termination(current: str | None, scheduled: bool) -> str:
    """The account's status once a termination is scheduled (or cancelled): a suspension
    stays in force either way, and lifting it later restores the right one."""
    if current == "suspended":
        return "suspended"
    return "terminating" if scheduled else "active"

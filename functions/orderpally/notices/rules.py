"""The one-month rule of clause 2.1, as plain functions over dates.

A change takes effect no earlier than one calendar month after customers are
told, counted in Asia/Taipei: 31 January + 1 month = 28 (or 29) February.
An exemption (security or IP, force majeure, a legal requirement), written
down with its justification, lets a change take effect at publication.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from orderpally import web

TAIPEI = ZoneInfo("Asia/Taipei")
# A publication time this far in the past is clock skew, not back-dating.
PUBLICATION_SKEW = timedelta(minutes=5)
MIN_JUSTIFICATION = 20


class Exemption(StrEnum):
    SECURITY_OR_IP = "security_or_ip"
    FORCE_MAJEURE = "force_majeure"
    LEGAL_REQUIREMENT = "legal_requirement"


def rule_not_met(slug: str, detail: str, field: str, earliest: date | None = None) -> web.Problem:
    """The 422 refusal of a notice that breaks the rule, naming the field (and the earliest
    effective date it could have)."""
    extra = {"earliest_effective_date": earliest.isoformat()} if earliest else {}
    return web.Problem(422, slug, "Notice rule not met", detail, field=field, extra=extra)


@dataclass(frozen=True)
class Timing:
    published_at: datetime
    effective_date: date


def add_one_month(day: date) -> date:
    """The same day next month, or that month's last day when it is shorter."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def taipei_date(moment: datetime) -> date:
    return moment.astimezone(TAIPEI).date()


def earliest_effective(published_at: datetime, exemption: Exemption | None) -> date:
    published = taipei_date(published_at)
    return published if exemption else add_one_month(published)


def publication_time(requested: datetime | None, now: datetime) -> datetime:
    """When a notice counts as published: now, or a later time asked for.

    A time up to PUBLICATION_SKEW in the past is the client's clock, not back-dating, so it
    is accepted, but recorded as now: kept as asked, 23:58 for a notice sent at 00:02 would
    move its earliest effective date a day earlier.
    """
    if requested is None:
        return now
    if requested < now - PUBLICATION_SKEW:
        raise rule_not_met(
            "notice-backdated", "A notice cannot be published in the past; publish it now or later.", "publish_at"
        )
    return max(requested, now)


def check_timing(timing: Timing, exemption: Exemption | None, justification: str | None) -> None:
    """Raises the refusal (web.Problem) unless the effective date keeps the one-month rule (or a recorded exemption)."""
    if exemption and len((justification or "").strip()) < MIN_JUSTIFICATION:
        raise rule_not_met(
            "exemption-unjustified",
            f"An exemption needs a written justification of at least {MIN_JUSTIFICATION} characters.",
            "exemption.justification",
        )
    earliest = earliest_effective(timing.published_at, exemption)
    if timing.effective_date < earliest:
        why = "publication" if exemption else "one calendar month after publication (Asia/Taipei)"
        raise rule_not_met(
            "effective-date-too-early",
            f"The effective date may be no earlier than {earliest.isoformat()}: {why}.",
            "effective_date",
            earliest,
        )


def check_correction(correction: Timing, exemption: Exemption | None, justification: str | None) -> None:
    """A correction is itself a notice to customers: whether it keeps, postpones or advances
    the effective date, that date must be a month after the correction is published (or
    exempt), so a text cannot be rewritten the day before it takes effect."""
    check_timing(correction, exemption, justification)

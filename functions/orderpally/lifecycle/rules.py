"""The lifecycle's rules as plain data and functions: termination and suspension (agreement
1.2, 3.1, 3.2(a)), and deletion (pseudonyms, retention dates, the write ramp, legal holds).

A termination takes effect at the end of its date in Asia/Taipei (or at once),
can be cancelled until then, and cannot be undone afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from orderpally import web

PSEUDONYM_PREFIX = "pseudonym:"
REMOVED = None  # personal fields become null: the type of the record stays obvious


def pseudonym(account_id: str, key: bytes) -> str:
    """A stable stand-in for an account id that cannot be turned back without the key.

    Stable, so the retained records of one account stay linked to each other
    (an accounting voucher to its invoice), and unlinkable to the person.
    """
    digest = hmac.new(key, account_id.encode(), hashlib.sha256).hexdigest()[:24]
    return PSEUDONYM_PREFIX + digest


def pseudonymised_fields(owner_field: str, personal_fields: list[str], account_id: str, key: bytes) -> dict:
    """The field updates that strip one party's personal data from a shared document."""
    updates: dict = {field: REMOVED for field in personal_fields}
    updates[owner_field] = pseudonym(account_id, key)
    return updates


def _id_pattern(account_id: str) -> re.Pattern[str]:
    # The id as a whole token (a path segment, a word), not inside a longer id.
    return re.compile(rf"(?<![A-Za-z0-9_-]){re.escape(account_id)}(?![A-Za-z0-9_-])")


def mentions(value: Any, account_id: str) -> bool:
    """Whether the account id appears anywhere in the value (nested fields, lists, map keys, paths)."""
    pattern = _id_pattern(account_id)
    if isinstance(value, str):
        return bool(pattern.search(value))
    if isinstance(value, dict):
        return any(mentions(k, account_id) or mentions(v, account_id) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(mentions(v, account_id) for v in value)
    return False


def replace_account(value: Any, account_id: str, alias: str) -> Any:
    """The value with every mention of the account id (in any field, list or path) turned into `alias`."""
    if isinstance(value, str):
        return _id_pattern(account_id).sub(alias, value)
    if isinstance(value, dict):
        return {replace_account(k, account_id, alias): replace_account(v, account_id, alias) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_account(v, account_id, alias) for v in value]
    return value


def without_personal(data: dict, paths: list[str]) -> dict:
    """`data` with each personal field nulled: `name`, `map.field`, or `list[].field` (each item's)."""
    result = dict(data)
    for path in paths:
        head, _, rest = path.partition(".")
        if head.endswith("[]"):
            name = head[:-2]
            items = result.get(name)
            if isinstance(items, list):
                result[name] = [without_personal(i, [rest]) if isinstance(i, dict) else i for i in items]
        elif rest:
            if isinstance(result.get(head), dict):
                result[head] = without_personal(result[head], [rest])
        elif head in result:
            result[head] = REMOVED
    return result


def values_at(data: dict, path: str) -> list[Any]:
    """The non-empty values at `name`, `map.field` or `list[].field` of `data`."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = data.get(head[:-2])
        found = [v for i in items if isinstance(i, dict) for v in values_at(i, rest)] if isinstance(items, list) else []
        return found
    value = data.get(head)
    if rest:
        return values_at(value, rest) if isinstance(value, dict) else []
    return [value] if value not in (None, "", [], {}) else []


def pseudonymised_record(
    data: dict, owner_field: str | None, personal_fields: list[str], account_id: str, key: bytes
) -> dict:
    """The record stripped of one account: its personal fields nulled, and every remaining mention of
    the account id (owner field, actor ids, object paths) replaced by the pseudonym."""
    alias = pseudonym(account_id, key)
    result = replace_account(without_personal(data, personal_fields), account_id, alias)
    if owner_field:
        result[owner_field] = alias
    return result


def changed_fields(before: dict, after: dict) -> dict:
    """The top-level fields of `after` that differ from `before` (an update's payload)."""
    return {k: v for k, v in after.items() if k not in before or before[k] != v}


def add_years(day: date, years: int) -> date:
    """`years` later on the same calendar day; 29 February falls back to 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


# 商業會計法 (Business Entity Accounting Act) art. 66: the annual closing is completed
# within two months of the fiscal year's end, extendable by two; the fiscal year is the
# calendar year (art. 6). Art. 38 counts retention from that completion, so the latest
# lawful completion, 30 April of the next year, is where the count starts.
ANNUAL_CLOSING_MONTH, ANNUAL_CLOSING_DAY = 4, 30


def annual_closing(record_day: date) -> date:
    """When the annual closing of the fiscal year `record_day` belongs to is completed, at the latest."""
    return date(record_day.year + 1, ANNUAL_CLOSING_MONTH, ANNUAL_CLOSING_DAY)


def retained_until(record_day: date, years: int, from_annual_closing: bool = True) -> date:
    """Kept for `years` after the annual closing of the record's own fiscal year, or after the
    record's own day for a class that is not counted from the closing."""
    start = annual_closing(record_day) if from_annual_closing else record_day
    return add_years(start, years)


def is_expired(record: date, years: int, from_annual_closing: bool, today: date) -> bool:
    return retained_until(record, years, from_annual_closing) <= today


def oldest_kept_day(today: date, years: int) -> date:
    """A record dated after this day is still within `years` of its own day (and of its closing)."""
    return add_years(today, -years)


def record_day(value: object, fallback: date) -> date:
    """The day a record belongs to, from its dating field (a timestamp or an ISO date);
    `fallback` (the termination day, which can only count longer) when it has none."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return fallback
    return fallback


# Firestore's ramp-up guidance: start at 500 operations a second on a collection
# and increase by 50% every 5 minutes.
RAMP_START_OPS = 500
RAMP_STEP_MINUTES = 5


def allowed_ops_per_second(started_at: datetime, now: datetime) -> int:
    minutes = max(0.0, (now - started_at).total_seconds() / 60)
    return int(RAMP_START_OPS * 1.5 ** int(minutes // RAMP_STEP_MINUTES))


def covered_by_hold(location_id: str, holds: list[dict]) -> dict | None:
    """The first active hold covering the location (a hold without locations covers everything)."""
    for hold in holds:
        if hold.get("released_at"):
            continue
        covered = hold.get("location_ids") or []
        if not covered or location_id in covered:
            return hold
    return None


# --- termination and suspension ----------------------------------------------------

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


# The bases staff may terminate on: all but the customer's own.
StaffBasis = Literal[
    "company_convenience", "breach_cure_period", "breach_immediate", "notice_A", "partner_B", "legal_C"
]
STAFF_BASES = frozenset(Basis(value) for value in get_args(StaffBasis))
SuspensionCode = Literal["policy_1_2", "A", "B", "C"]
SUSPENSION_CODES: tuple[str, ...] = get_args(SuspensionCode)


def _invalid_date(detail: str, field: str) -> web.Problem:
    return web.Problem(422, "termination-date", "Invalid termination date", detail, field=field)


def _rule_not_met(detail: str, field: str) -> web.Problem:
    return web.Problem(422, "termination-rule", "Termination rule not met", detail, field=field)


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
        raise _invalid_date("The termination date cannot be in the past.", "termination_date")
    if requested > today + timedelta(days=max_days_ahead):
        latest = (today + timedelta(days=max_days_ahead)).isoformat()
        raise _invalid_date(f"The termination date can be at most {latest}.", "termination_date")
    return end_of_day(requested)


def staff_termination_at(
    basis: Basis, now: datetime, *, notice_days: int, cure_period_days: int | None, requested: date | None
) -> datetime:
    """When a termination by OrderPally takes effect, by its basis."""
    if basis == Basis.COMPANY_CONVENIENCE:
        earliest = taipei_today(now) + timedelta(days=notice_days)
        day = requested or earliest
        if day < earliest:
            raise _rule_not_met(
                f"Termination for convenience needs {notice_days} days' notice: {earliest.isoformat()} or later.",
                "termination_date",
            )
        return end_of_day(day)
    if basis == Basis.BREACH_CURE_PERIOD:
        if not cure_period_days or cure_period_days < 1:
            raise _rule_not_met("A cure period of at least one day is needed.", "cure_period_days")
        return end_of_day(taipei_today(now) + timedelta(days=cure_period_days))
    if basis == Basis.CUSTOMER_CONVENIENCE:
        raise _rule_not_met("Staff cannot terminate on the customer's behalf.", "basis")
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

"""Deletion rules as plain functions: pseudonyms, retention dates, and the write ramp."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, date, datetime
from typing import Any

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

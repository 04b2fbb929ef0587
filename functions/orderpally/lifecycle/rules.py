"""Deletion rules as plain functions: pseudonyms, retention dates, and the write ramp."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime

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


def add_years(day: date, years: int) -> date:
    """`years` later on the same calendar day; 29 February falls back to 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def retained_until(terminated_on: date, years: int) -> date:
    """Kept for `years` after the end of the year the record belongs to (the annual closing)."""
    return add_years(date(terminated_on.year, 12, 31), years)


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

"""How many archives (content exports, records requests) an account may ask for.

Each archive is built from everything the account holds, so requests are limited:
one in progress of each kind at a time, and a number per day (Asia/Taipei). The
count is kept in `archive_quotas/{account_id}` and checked and taken in the same
transaction that creates the request, so two requests at once cannot both pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

QUOTAS = "archive_quotas"
TAIPEI = ZoneInfo("Asia/Taipei")


@dataclass(frozen=True)
class Limit:
    kind: str  # the field of the quota document
    per_day: int
    # A request still queued after this long no longer blocks the next: a build that died
    # (dead-lettered) must not lock the customer out.
    busy_for: timedelta = timedelta(hours=6)


EXPORTS = Limit("export", per_day=3)
RECORDS = Limit("records", per_day=5)


class InProgress(Exception):
    """One of this kind is still being built; `request_id` names it."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"{request_id} is in progress")
        self.request_id = request_id


class DailyLimitReached(Exception):
    def __init__(self, per_day: int, retry_after: int) -> None:
        super().__init__(f"{per_day} a day")
        self.per_day = per_day
        self.retry_after = retry_after


def taipei_day(now: datetime) -> str:
    return now.astimezone(TAIPEI).date().isoformat()


def seconds_to_next_day(now: datetime) -> int:
    local = now.astimezone(TAIPEI)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=TAIPEI)
    return max(1, int((midnight - local).total_seconds()) + 1)


def take(limit: Limit, slot: dict | None, active: dict | None, request_id: str, now: datetime) -> dict:
    """The quota slot after one more request, or why not. `active`: the slot's last request, if any."""
    slot = slot or {}
    if (
        active
        and active.get("status") == "queued"
        and isinstance(active.get("requested_at"), datetime)
        and now - active["requested_at"] < limit.busy_for
    ):
        raise InProgress(slot["active_id"])
    day = taipei_day(now)
    count = int(slot.get("count", 0)) if slot.get("day") == day else 0
    if count >= limit.per_day:
        raise DailyLimitReached(limit.per_day, seconds_to_next_day(now))
    return {"day": day, "count": count + 1, "active_id": request_id}


def reserve(
    transaction: Any, db: Any, account_id: str, limit: Limit, collection: str, request_id: str, now: datetime
) -> None:
    """Takes one request of `limit`'s kind for the account inside `transaction` (reads, then one write)."""
    ref = db.collection(QUOTAS).document(account_id)
    snap = ref.get(transaction=transaction)
    slot = ((snap.to_dict() or {}) if snap.exists else {}).get(limit.kind)
    active = None
    if slot and slot.get("active_id"):
        active_snap = db.collection(collection).document(slot["active_id"]).get(transaction=transaction)
        active = active_snap.to_dict() if active_snap.exists else None
    new_slot = take(limit, slot, active, request_id, now)
    transaction.set(ref, {"account_id": account_id, limit.kind: new_slot}, merge=True)


def problem(exc: InProgress | DailyLimitReached, what: str, path: str) -> Any:
    """The answer to a refused request: 409 naming the one in progress, or 429 with Retry-After.

    `path` is where the request in progress is read, with `{id}` for its id.
    """
    from orderpally import web

    if isinstance(exc, InProgress):
        href = path.format(id=exc.request_id)
        return web.Problem(
            409,
            "archive-in-progress",
            "Already in progress",
            f"Your previous {what} is still being prepared; wait for it, at {href}.",
            headers={"Location": href},
            extra={"in_progress": exc.request_id, "href": href},
        )
    return web.Problem(
        429,
        "archive-limit",
        "Too many requests",
        f"At most {exc.per_day} {what}s a day (Asia/Taipei); try again tomorrow.",
        headers={"Retry-After": str(exc.retry_after)},
        extra={"per_day": exc.per_day},
    )

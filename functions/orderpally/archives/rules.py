"""How many archives (content exports, records requests) an account may ask for.

Each archive is built from everything the account holds, so requests are limited:
one in progress of each kind at a time, and a number per day (Asia/Taipei). The
count is kept in `archive_quotas/{account_id}` (`archives.store`) and checked and taken
in the same transaction that creates the request (`archives.service.reserve`), so two
requests at once cannot both pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from orderpally import web

TAIPEI = ZoneInfo("Asia/Taipei")


@dataclass(frozen=True)
class Limit:
    kind: str  # the field of the quota document
    per_day: int
    what: str  # the archive as the customer is told of it
    path: str  # where the request in progress is read, with `{id}` for its id
    # A request still queued after this long no longer blocks the next: a build that died
    # (dead-lettered) must not lock the customer out.
    busy_for: timedelta = timedelta(hours=6)


EXPORTS = Limit("export", per_day=3, what="export", path="/account/exports/{id}")
RECORDS = Limit("records", per_day=5, what="records request", path="/account/records-requests/{id}")


def in_progress(limit: Limit, request_id: str) -> web.Problem:
    """409, naming the request of this kind still being built."""
    href = limit.path.format(id=request_id)
    return web.Problem(
        409,
        "archive-in-progress",
        "Already in progress",
        f"Your previous {limit.what} is still being prepared; wait for it, at {href}.",
        headers={"Location": href},
        extra={"in_progress": request_id, "href": href},
    )


def daily_limit_reached(limit: Limit, retry_after: int) -> web.Problem:
    """429, with Retry-After until the next day in Taipei."""
    return web.Problem(
        429,
        "archive-limit",
        "Too many requests",
        f"At most {limit.per_day} {limit.what}s a day (Asia/Taipei); try again tomorrow.",
        headers={"Retry-After": str(retry_after)},
        extra={"per_day": limit.per_day},
    )


def taipei_day(now: datetime) -> str:
    return now.astimezone(TAIPEI).date().isoformat()


def seconds_to_next_day(now: datetime) -> int:
    local = now.astimezone(TAIPEI)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=TAIPEI)
    return max(1, int((midnight - local).total_seconds()) + 1)


def take(limit: Limit, slot: dict | None, active: dict | None, request_id: str, now: datetime) -> dict:
    """The quota slot after one more request, or the refusal. `active`: the slot's last request, if any."""
    slot = slot or {}
    if (
        active
        and active.get("status") == "queued"
        and isinstance(active.get("requested_at"), datetime)
        and now - active["requested_at"] < limit.busy_for
    ):
        raise in_progress(limit, slot["active_id"])
    day = taipei_day(now)
    count = int(slot.get("count", 0)) if slot.get("day") == day else 0
    if count >= limit.per_day:
        raise daily_limit_reached(limit, seconds_to_next_day(now))
    return {"day": day, "count": count + 1, "active_id": request_id}

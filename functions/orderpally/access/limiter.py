"""A fixed-window rate limiter for sign-in and other abusable endpoints.

Each key has one counter per window, named by a hash (keys carry email addresses);
an atomic increment counts the attempt (access.store keeps the counters, which
expire by TTL). Limits can be changed by operators with RATE_LIMITS.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orderpally import web
from orderpally.access import store

if TYPE_CHECKING:
    from google.cloud.firestore import Client, WriteBatch


@dataclass(frozen=True)
class Limit:
    name: str
    max_attempts: int
    window: timedelta


@dataclass
class Limited(web.Problem):
    """The 429 an attempt over its limit is refused with: a web.Problem, answered as it is;
    `limit` (the one the caller named) lets a caller that counts on several tell which refused."""

    limit: Limit | None = None
    retry_after: int = 0


def refused(limit: Limit, retry_after: int) -> Limited:
    return Limited(
        429,
        "too-many-attempts",
        "Too many attempts",
        f"Try again in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
        limit=limit,
        retry_after=retry_after,
    )


def configured(limit: Limit) -> Limit:
    """The limit as operators configured it (RATE_LIMITS), else as built in."""
    from orderpally.config import settings

    override = settings().rate_limits.get(limit.name)
    return Limit(limit.name, override[0], timedelta(seconds=override[1])) if override else limit


def _window(limit: Limit, now: datetime) -> tuple[int, datetime]:
    seconds = int(limit.window.total_seconds())
    index = int(now.timestamp()) // seconds
    return index, datetime.fromtimestamp((index + 1) * seconds, tz=now.tzinfo)


def _counter(limit: Limit, key: str, now: datetime) -> tuple[store.Counter, datetime]:
    """The store's counter for `key` in `now`'s window of the (configured) limit, and the window's end."""
    index, ends = _window(limit, now)
    digest = hashlib.sha256(f"{limit.name}\x00{key}".encode()).hexdigest()[:40]
    return (f"{limit.name}-{digest}-{index}", limit.name, ends + limit.window), ends


def hit(db: Client, limit: Limit, key: str, now: datetime) -> None:
    """Counts one attempt; raises Limited when this one is over the limit."""
    hit_all(db, [(limit, key)], now)


def hit_all(db: Client, counters: Sequence[tuple[Limit, str]], now: datetime) -> None:
    """Counts one attempt on every counter, in one write; raises Limited for the first one over its limit.

    Each count is the one this attempt's increment produced: concurrent attempts are
    numbered one by one, so a burst is never let through beyond the limit.
    """
    judged = [(asked, configured(asked)) for asked, _ in counters]
    placed = [_counter(limit, key, now) for (_, limit), (_, key) in zip(judged, counters, strict=True)]
    counts = store.count_on(db, [counter for counter, _ in placed])
    for (asked, limit), (_, ends), count in zip(judged, placed, counts, strict=True):
        if count > limit.max_attempts:
            # The limit the caller named, so it can tell which one refused, however configured.
            raise refused(asked, max(1, math.ceil((ends - now).total_seconds())))


def refund_all(
    db: Client, counters: Sequence[tuple[Limit, str]], now: datetime, writer: WriteBatch | None = None
) -> None:
    """Takes back the attempts `hit_all` counted at the same `now` (they turned out not to count),
    through `writer` (a batch, committed with its other writes) when given."""
    store.take_back(db, [_counter(configured(limit), key, now)[0][0] for limit, key in counters], writer)


def tally(writer: WriteBatch, db: Client, limit: Limit, key: str, now: datetime) -> None:
    """Counts one event on `limit`'s counter through `writer` (a batch), judging nothing."""
    store.stage_count(writer, db, _counter(configured(limit), key, now)[0])

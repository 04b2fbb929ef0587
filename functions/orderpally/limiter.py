"""A fixed-window rate limiter for sign-in and other abusable endpoints.

Each key has one counter per window, named by a hash (keys carry email addresses);
an atomic increment counts the attempt, in `rate_limits/{counter}` (the counters
expire by TTL). Limits can be changed by operators with RATE_LIMITS. Shared: access
limits sign-in, sign-up and resets with it, incidents their intake.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import web

if TYPE_CHECKING:
    from google.cloud.firestore import Client, WriteBatch


RATE_LIMITS = "rate_limits"
Counter = tuple[str, str, datetime]  # (document id, limit name, expire_at)


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


def _counter(limit: Limit, key: str, now: datetime) -> tuple[Counter, datetime]:
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
    counts = _count_on(db, [counter for counter, _ in placed])
    for (asked, limit), (_, ends), count in zip(judged, placed, counts, strict=True):
        if count > limit.max_attempts:
            # The limit the caller named, so it can tell which one refused, however configured.
            raise refused(asked, max(1, math.ceil((ends - now).total_seconds())))


def refund_all(
    db: Client, counters: Sequence[tuple[Limit, str]], now: datetime, writer: WriteBatch | None = None
) -> None:
    """Takes back the attempts `hit_all` counted at the same `now` (they turned out not to count),
    through `writer` (a batch, committed with its other writes) when given."""
    _take_back(db, [_counter(configured(limit), key, now)[0][0] for limit, key in counters], writer)


def tally(writer: WriteBatch, db: Client, limit: Limit, key: str, now: datetime) -> None:
    """Counts one event on `limit`'s counter through `writer` (a batch), judging nothing."""
    _stage_count(writer, db, _counter(configured(limit), key, now)[0])


# --- the counters -----------------------------------------------------------------------


def _counter_fields(name: str, expire_at: datetime, step: int) -> dict[str, Any]:
    from google.cloud import firestore

    return {"count": firestore.Increment(step), "limit": name, "expire_at": expire_at}


def _count_on(db: Client, counters: Sequence[Counter]) -> list[int]:
    """Adds one to every counter in one write; their counts after it, in order.

    An atomic increment rather than a transaction: many requests from one address
    hit one counter at once, and a transaction would make them fail on contention.
    The commit answers each increment's result (its transform result), so the count
    is this attempt's own, with no read after it.
    """
    batch = db.batch()
    for doc_id, name, expire_at in counters:
        batch.set(db.collection(RATE_LIMITS).document(doc_id), _counter_fields(name, expire_at, 1), merge=True)
    return [int(result.transform_results[0].integer_value) for result in batch.commit()]


def _take_back(db: Client, doc_ids: Sequence[str], writer: WriteBatch | None = None) -> None:
    """Subtracts one from every counter, in one write: through `writer` (committed with its
    other writes), or a commit of its own."""
    from google.cloud import firestore

    batch = writer if writer is not None else db.batch()  # an empty batch is falsy
    for doc_id in doc_ids:
        batch.set(db.collection(RATE_LIMITS).document(doc_id), {"count": firestore.Increment(-1)}, merge=True)
    if writer is None:
        batch.commit()


def _stage_count(writer: WriteBatch, db: Client, counter: Counter) -> None:
    """Adds one to the counter through `writer`, so it commits with the writer's other writes."""
    doc_id, name, expire_at = counter
    writer.set(db.collection(RATE_LIMITS).document(doc_id), _counter_fields(name, expire_at, 1), merge=True)

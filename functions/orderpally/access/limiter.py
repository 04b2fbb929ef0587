"""A Firestore-backed fixed-window rate limiter for sign-in and other abusable endpoints.

Each key has one document per window, named by a hash (keys carry email
addresses); an atomic increment counts the attempt. Documents expire by TTL
(`expire_at`). Limits can be changed by operators with RATE_LIMITS.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

RATE_LIMITS = "rate_limits"


@dataclass(frozen=True)
class Limit:
    name: str
    max_attempts: int
    window: timedelta


class Limited(Exception):
    def __init__(self, limit: Limit, retry_after: int) -> None:
        super().__init__(f"{limit.name}: retry after {retry_after}s")
        self.limit = limit
        self.retry_after = retry_after


def configured(limit: Limit) -> Limit:
    """The limit as operators configured it (RATE_LIMITS), else as built in."""
    from orderpally.config import settings

    override = settings().rate_limits.get(limit.name)
    return Limit(limit.name, override[0], timedelta(seconds=override[1])) if override else limit


def _window(limit: Limit, now: datetime) -> tuple[int, datetime]:
    seconds = int(limit.window.total_seconds())
    index = int(now.timestamp()) // seconds
    return index, datetime.fromtimestamp((index + 1) * seconds, tz=now.tzinfo)


def _ref(db: Any, limit: Limit, key: str, index: int) -> Any:
    digest = hashlib.sha256(f"{limit.name}\x00{key}".encode()).hexdigest()[:40]
    return db.collection(RATE_LIMITS).document(f"{limit.name}-{digest}-{index}")


def hit(db: Any, limit: Limit, key: str, now: datetime) -> None:
    """Counts one attempt; raises Limited when this one is over the limit."""
    hit_all(db, [(limit, key)], now)


def hit_all(db: Any, counters: Sequence[tuple[Limit, str]], now: datetime) -> None:
    """Counts one attempt on every counter, in one write; raises Limited for the first one over its limit.

    An atomic increment rather than a transaction: many requests from one address
    hit one counter at once, and a transaction would make them fail on contention.
    Reading the count after the increment may see other attempts' increments too:
    a burst can be refused a little early, never let through beyond the limit.
    """
    from google.cloud import firestore

    batch = db.batch()
    counted = []
    for asked, key in counters:
        limit = configured(asked)
        index, ends = _window(limit, now)
        ref = _ref(db, limit, key, index)
        batch.set(
            ref, {"count": firestore.Increment(1), "limit": limit.name, "expire_at": ends + limit.window}, merge=True
        )
        counted.append((asked, limit, ends, ref))
    batch.commit()
    counts = {snap.reference.path: int(snap.get("count")) for snap in db.get_all([c[-1] for c in counted])}
    for asked, limit, ends, ref in counted:
        if counts[ref.path] > limit.max_attempts:
            # The limit the caller named, so it can tell which one refused, however configured.
            raise Limited(asked, max(1, math.ceil((ends - now).total_seconds())))


def refund_all(db: Any, counters: Sequence[tuple[Limit, str]], now: datetime) -> None:
    """Takes back the attempts `hit_all` counted at the same `now` (they turned out not to count)."""
    from google.cloud import firestore

    batch = db.batch()
    for limit, key in counters:
        limit = configured(limit)
        index, _ = _window(limit, now)
        batch.set(_ref(db, limit, key, index), {"count": firestore.Increment(-1)}, merge=True)
    batch.commit()


def tally(writer: Any, db: Any, limit: Limit, key: str, now: datetime) -> None:
    """Counts one event on `limit`'s counter through `writer` (a batch), judging nothing."""
    from google.cloud import firestore

    limit = configured(limit)
    index, ends = _window(limit, now)
    writer.set(
        _ref(db, limit, key, index),
        {"count": firestore.Increment(1), "limit": limit.name, "expire_at": ends + limit.window},
        merge=True,
    )

"""A Firestore-backed fixed-window rate limiter for sign-in and other abusable endpoints.

Each key (already hashed: keys carry email addresses) has one document per
window; a transaction counts the attempt. Documents expire by TTL (`expire_at`).
"""

from __future__ import annotations

import hashlib
import math
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


def _window(limit: Limit, now: datetime) -> tuple[int, datetime]:
    seconds = int(limit.window.total_seconds())
    index = int(now.timestamp()) // seconds
    return index, datetime.fromtimestamp((index + 1) * seconds, tz=now.tzinfo)


def _ref(db: Any, limit: Limit, key: str, index: int) -> Any:
    digest = hashlib.sha256(f"{limit.name}\x00{key}".encode()).hexdigest()[:40]
    return db.collection(RATE_LIMITS).document(f"{limit.name}-{digest}-{index}")


def check(db: Any, limit: Limit, key: str, now: datetime) -> None:
    """Raises Limited when the key has used up its window, without counting."""
    index, ends = _window(limit, now)
    snapshot = _ref(db, limit, key, index).get()
    if snapshot.exists and int(snapshot.get("count")) >= limit.max_attempts:
        raise Limited(limit, max(1, math.ceil((ends - now).total_seconds())))


def hit(db: Any, limit: Limit, key: str, now: datetime) -> None:
    """Counts one attempt; raises Limited when this one is over the limit."""
    from google.cloud import firestore

    index, ends = _window(limit, now)
    ref = _ref(db, limit, key, index)

    @firestore.transactional
    def count(transaction: Any) -> int:
        snapshot = ref.get(transaction=transaction)
        used = int(snapshot.get("count")) if snapshot.exists else 0
        if used >= limit.max_attempts:
            return used + 1
        transaction.set(ref, {"count": used + 1, "limit": limit.name, "expire_at": ends + limit.window})
        return used + 1

    if count(db.transaction()) > limit.max_attempts:
        raise Limited(limit, max(1, math.ceil((ends - now).total_seconds())))

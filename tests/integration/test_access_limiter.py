"""The rate limiter on the Firestore emulator: counts under concurrency, never lets more through."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from orderpally import clients, limiter

pytestmark = pytest.mark.usefixtures("emulators")
NOW = datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)


def test_concurrent_attempts_never_exceed_the_limit_and_never_error():
    limit = limiter.Limit("test-burst", 5, timedelta(minutes=1))
    allowed, refused, errors = [], [], []

    def attempt() -> None:
        try:
            limiter.hit(clients.firestore_client(), limit, "203.0.113.1", NOW)
            allowed.append(1)
        except limiter.Limited as exc:
            refused.append(exc.retry_after)
        except Exception as exc:  # noqa: BLE001  the point: nothing else may escape
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each attempt reads the counter after its own increment, so a burst may refuse more
    # than strictly needed (some see later increments), never admit more.
    assert len(allowed) <= 5
    assert len(allowed) + len(refused) == 20
    assert all(0 < seconds <= 30 for seconds in refused)


def test_windows_and_keys_are_separate():
    db = clients.firestore_client()
    limit = limiter.Limit("test-window", 2, timedelta(minutes=1))
    limiter.hit(db, limit, "a", NOW)
    limiter.hit(db, limit, "a", NOW)
    with pytest.raises(limiter.Limited):
        limiter.hit(db, limit, "a", NOW)
    limiter.hit(db, limit, "b", NOW)
    limiter.hit(db, limit, "a", NOW + timedelta(minutes=1))


def test_several_counters_count_together_and_refunds_give_attempts_back():
    db = clients.firestore_client()
    tight = limiter.Limit("test-tight", 1, timedelta(minutes=1))
    loose = limiter.Limit("test-loose", 10, timedelta(minutes=1))
    limiter.hit_all(db, [(tight, "k"), (loose, "k")], NOW)
    with pytest.raises(limiter.Limited) as refused:
        limiter.hit_all(db, [(loose, "k"), (tight, "k")], NOW)
    assert refused.value.limit.name == "test-tight"
    limiter.refund_all(db, [(tight, "k"), (tight, "k")], NOW)  # both attempts on tight given back
    limiter.hit_all(db, [(tight, "k")], NOW)


def test_a_configured_limit_applies_and_refusals_name_the_limit_the_caller_gave(monkeypatch):
    from orderpally.config import settings

    db = clients.firestore_client()
    built_in = limiter.Limit("test-configured", 100, timedelta(minutes=1))
    monkeypatch.setenv("RATE_LIMITS", "test-configured=1/60")
    settings.cache_clear()
    try:
        limiter.hit(db, built_in, "k", NOW)
        with pytest.raises(limiter.Limited) as refused:  # the operator's 1, not the built-in 100
            limiter.hit(db, built_in, "k", NOW)
        assert refused.value.limit is built_in  # callers tell their limits apart by identity
    finally:
        monkeypatch.undo()
        settings.cache_clear()

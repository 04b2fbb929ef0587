"""handle_event against the Firestore emulator: once-only effects, drops, retries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from orderpally import clients, events
from orderpally.heartbeat import service as heartbeat
from support.cloudevents_factory import envelope, pubsub_event

pytestmark = pytest.mark.usefixtures("emulators")

SPEC = events.EventSpec(
    function="test_handler", message_type=heartbeat.MESSAGE_TYPE, payload=heartbeat.Heartbeat, max_age_seconds=600
)


def beat_event(event_id="ev-1", **kwargs):
    return pubsub_event(
        envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": datetime.now(UTC)}), event_id=event_id, **kwargs
    )


def ledger_status(event_id):
    from google.cloud.firestore import FieldFilter

    ledger = clients.firestore_client().collection(events.LEDGER_COLLECTION)
    docs = ledger.where(filter=FieldFilter("event_id", "==", event_id)).get()
    assert len(docs) == 1
    return docs[0].to_dict()["status"]


class Counter:
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, payload, context):
        with self.lock:
            self.calls.append(context.event_id)


def test_a_redelivered_event_has_one_effect():
    handler = Counter()
    assert events.handle_event(clients.firestore_client(), beat_event(), SPEC, handler) == events.Outcome.DONE
    assert events.handle_event(clients.firestore_client(), beat_event(), SPEC, handler) == events.Outcome.DUPLICATE
    assert handler.calls == ["ev-1"]
    assert ledger_status("ev-1") == "done"


def test_concurrent_deliveries_have_one_effect():
    handler = Counter()
    gate = threading.Barrier(6)
    outcomes = []

    def slow_handler(payload, context):
        handler(payload, context)
        threading.Event().wait(0.3)

    def deliver():
        gate.wait()
        try:
            outcomes.append(events.handle_event(clients.firestore_client(), beat_event("ev-c"), SPEC, slow_handler))
        except events.RetryableError:
            outcomes.append("retry")

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handler.calls == ["ev-c"]
    assert outcomes.count(events.Outcome.DONE) == 1
    # The losers were told to come back; a redelivery now is a duplicate.
    assert (
        events.handle_event(clients.firestore_client(), beat_event("ev-c"), SPEC, handler) == events.Outcome.DUPLICATE
    )
    assert handler.calls == ["ev-c"]


def test_a_retryable_failure_raises_and_the_redelivery_finishes_the_work():
    attempts = []

    def flaky(payload, context):
        attempts.append(1)
        if len(attempts) == 1:
            raise events.RetryableError("backend busy")

    with pytest.raises(events.RetryableError):
        events.handle_event(clients.firestore_client(), beat_event("ev-r"), SPEC, flaky)
    assert ledger_status("ev-r") == "retrying"
    assert events.handle_event(clients.firestore_client(), beat_event("ev-r"), SPEC, flaky) == events.Outcome.DONE
    assert len(attempts) == 2


def test_a_crash_mid_handler_is_retried_not_lost():
    def crashing(payload, context):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        events.handle_event(clients.firestore_client(), beat_event("ev-x"), SPEC, crashing)
    handler = Counter()
    assert events.handle_event(clients.firestore_client(), beat_event("ev-x"), SPEC, handler) == events.Outcome.DONE
    assert handler.calls == ["ev-x"]


def test_a_permanent_failure_is_recorded_and_acknowledged():
    def refusing(payload, context):
        raise events.PermanentError("recipient does not exist")

    assert events.handle_event(clients.firestore_client(), beat_event("ev-p"), SPEC, refusing) == events.Outcome.FAILED
    assert ledger_status("ev-p") == events.Outcome.FAILED
    assert (
        events.handle_event(clients.firestore_client(), beat_event("ev-p"), SPEC, Counter()) == events.Outcome.DUPLICATE
    )


def test_a_too_old_event_is_recorded_and_dropped():
    handler = Counter()
    old = beat_event("ev-old", time=datetime.now(UTC) - timedelta(seconds=601))
    assert events.handle_event(clients.firestore_client(), old, SPEC, handler) == events.Outcome.TOO_OLD
    assert handler.calls == []
    assert ledger_status("ev-old") == events.Outcome.TOO_OLD


def test_a_malformed_event_is_recorded_and_dropped():
    handler = Counter()
    bad = pubsub_event(None, raw=b"\xff not json", event_id="ev-bad")
    assert events.handle_event(clients.firestore_client(), bad, SPEC, handler) == events.Outcome.MALFORMED
    assert handler.calls == []
    assert ledger_status("ev-bad") == events.Outcome.MALFORMED


def test_event_ids_with_slashes_are_safe_ledger_keys():
    handler = Counter()
    assert events.handle_event(clients.firestore_client(), beat_event("a/b/../c"), SPEC, handler) == events.Outcome.DONE
    assert ledger_status("a/b/../c") == "done"


def test_a_handler_with_its_own_ledger_is_left_to_it_and_drops_are_still_recorded():
    from google.cloud.firestore import FieldFilter

    own = events.EventSpec(
        function="test_own_ledger",
        message_type=heartbeat.MESSAGE_TYPE,
        payload=heartbeat.Heartbeat,
        max_age_seconds=600,
        handler_is_idempotent=True,
    )
    handler = Counter()
    assert events.handle_event(clients.firestore_client(), beat_event("ev-own"), own, handler) == events.Outcome.DONE
    # A redelivery reaches the handler, whose own ledger (the mail's, keyed by the request) absorbs it.
    assert events.handle_event(clients.firestore_client(), beat_event("ev-own"), own, handler) == events.Outcome.DONE
    assert handler.calls == ["ev-own", "ev-own"]
    ledger = clients.firestore_client().collection(events.LEDGER_COLLECTION)
    assert ledger.where(filter=FieldFilter("event_id", "==", "ev-own")).get() == []
    stale = beat_event("ev-own-old", time=datetime.now(UTC) - timedelta(hours=1))
    assert events.handle_event(clients.firestore_client(), stale, own, handler) == events.Outcome.TOO_OLD
    assert ledger_status("ev-own-old") == events.Outcome.TOO_OLD
    assert handler.calls == ["ev-own", "ev-own"]

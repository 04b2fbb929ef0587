from __future__ import annotations

from datetime import UTC, datetime

import pytest
from firebase_admin import exceptions as firebase_errors
from google.api_core import exceptions as gexc

from orderpally import events
from orderpally.heartbeat import service as heartbeat
from support.cloudevents_factory import envelope, pubsub_event

SPEC = events.EventSpec(function="f", message_type=heartbeat.MESSAGE_TYPE, payload=heartbeat.Heartbeat)
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def test_valid_event_decodes_to_typed_payload():
    env, beat = events.decode(pubsub_event(envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": NOW})), SPEC)
    assert env.schema_version == 1
    assert beat.emitted_at == NOW


def test_envelope_round_trips_through_the_publish_encoding():
    raw = events.envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": NOW.isoformat()})
    _, beat = events.decode(pubsub_event(None, raw=raw), SPEC)
    assert beat.emitted_at == NOW


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (pubsub_event(None, raw=b"not json"), "envelope"),
        (pubsub_event({"type": heartbeat.MESSAGE_TYPE, "data": {}}), "envelope"),
        (pubsub_event(envelope("other.type", {"emitted_at": NOW})), "message type"),
        (pubsub_event(envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": NOW}, schema_version=2)), "schema version"),
        (pubsub_event(envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": "yesterday"})), "emitted_at"),
        (pubsub_event(envelope(heartbeat.MESSAGE_TYPE, {"emitted_at": NOW, "extra": 1})), "extra"),
    ],
)
def test_malformed_events_are_permanent_errors(event, reason):
    with pytest.raises(events.PermanentError, match=reason):
        events.decode(event, SPEC)


@pytest.mark.parametrize(
    "busy",
    [
        ValueError("Failed to commit transaction in 5 attempts."),
        gexc.Aborted("Transaction lock timeout."),
    ],
)
def test_contention_inside_the_block_is_retryable(busy):
    with pytest.raises(events.RetryableError), events.contention_is_retryable("the ledger"):
        raise busy


def test_other_errors_pass_through_the_contention_guard():
    with pytest.raises(ValueError, match="a bug"), events.contention_is_retryable("the ledger"):
        raise ValueError("a bug")


@pytest.mark.parametrize(
    "outage",
    [
        gexc.ServiceUnavailable("pubsub down"),
        gexc.RetryError("gave up", cause=None),
        TimeoutError("no message id in time"),
        ConnectionRefusedError("refused"),
        gexc.Aborted("Transaction lock timeout."),
        firebase_errors.UnavailableError("auth backend down"),
        firebase_errors.DeadlineExceededError("auth backend slow"),
    ],
)
def test_an_outage_after_the_commit_is_left_for_its_sweep(outage):
    with events.left_for_later("a build message"):
        raise outage


@pytest.mark.parametrize(
    "bug",
    [
        ValueError("a bug"),
        KeyError("request_id"),
        gexc.PermissionDenied("no grant"),
        firebase_errors.PermissionDeniedError("no grant"),
    ],
)
def test_anything_else_after_the_commit_is_raised(bug):
    with pytest.raises(type(bug)), events.left_for_later("a build message"):
        raise bug

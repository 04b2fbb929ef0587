"""Pub/Sub messages between functions, and the rules every event handler follows.

Messages are JSON envelopes with a schema version. A handler runs under
`handle_event`, which gives it:
  - idempotency: a Firestore ledger keyed by function and CloudEvent id, so a
    redelivered or concurrently delivered event has one effect;
  - a maximum age: stale events are recorded and acknowledged, not processed;
  - the retry rule: only retryable failures raise (Pub/Sub redelivers, and
    after the catalogue's attempts the dead-letter topic keeps the message);
    malformed or permanently failing events are recorded and acknowledged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from orderpally import clients, leases, structured_logging
from orderpally.config import settings

if TYPE_CHECKING:
    from concurrent.futures import Future

    from google.cloud.firestore import Client
    from google.cloud.pubsub_v1 import PublisherClient

LEDGER_COLLECTION = "event_ledger"
# How long a delivery may hold its claim before another delivery may take over.
DEFAULT_LEASE_SECONDS = 120
# Ledger entries expire (Firestore TTL on `expire_at`) well after Pub/Sub's
# 7-day maximum redelivery window.
LEDGER_TTL = timedelta(days=14)

Payload = TypeVar("Payload", bound=pydantic.BaseModel)

_log = structured_logging.get_logger("orderpally.events")


FAULTS_COLLECTION = "ops"


class FaultInjected(Exception):
    """A crash the tests asked for (never in production)."""


def fault_document(function: str) -> str:
    """Where tests arm a fault for one function: {"point": "after-handler", "remaining": 1}."""
    return f"{FAULTS_COLLECTION}/fault-{function}"


def inject_fault(db: Client, function: str, point: str) -> None:
    """Raises FaultInjected when the function's fault document asks for a crash at `point`.

    Off unless FAULT_POINTS=on (refused in production): the document is not even read
    otherwise. One document per function and a plain read first, so unarmed events
    never contend with each other.
    """
    if not settings().fault_points:
        return
    from google.cloud import firestore

    ref = db.document(fault_document(function))
    armed = ref.get().to_dict()
    if not armed or armed.get("point") != point or int(armed.get("remaining", 0)) < 1:
        return

    @firestore.transactional
    def take(transaction: Any) -> bool:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current.get("point") != point or int(current.get("remaining", 0)) < 1:
            return False
        transaction.update(ref, {"remaining": int(current["remaining"]) - 1})
        return True

    if take(db.transaction()):
        raise FaultInjected(f"{function} at {point}")


class RetryableError(Exception):
    """A transient failure: the event is redelivered."""


@contextlib.contextmanager
def contention_is_retryable(what: str) -> Iterator[None]:
    """A Firestore transaction that gave up on contention (or was lost to a reset) inside the
    block becomes a RetryableError: Pub/Sub comes back later, nothing is marked failed."""
    try:
        yield
    except Exception as exc:
        if clients.transaction_contended(exc):
            raise RetryableError(f"{what} is busy") from None
        raise


class PermanentError(Exception):
    """The event can never succeed: it is recorded and acknowledged."""


class Envelope(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    schema_version: int = pydantic.Field(ge=1)
    type: str = pydantic.Field(min_length=1, max_length=100)
    data: dict[str, Any]
    published_at: datetime | None = None


def envelope(message_type: str, data: dict[str, Any], schema_version: int = 1) -> bytes:
    body = Envelope(schema_version=schema_version, type=message_type, data=data, published_at=datetime.now(UTC))
    return body.model_dump_json().encode()


def topic_path(topic: str) -> str:
    return f"projects/{settings().project_id}/topics/{topic}"


class Publisher:
    """Publishes JSON envelopes to topics: how a use case sends a message, handed to it by
    the function that calls it.

    Given how to make the Pub/Sub client rather than the client, so a function that never
    publishes never pays for making one (the factory is `clients.publisher`, made once).
    """

    def __init__(self, client: Callable[[], PublisherClient]) -> None:
        self._client = client

    def publish_async(
        self, topic: str, message_type: str, data: dict[str, Any], *, schema_version: int = 1, ordering_key: str = ""
    ) -> Future:
        """Starts publishing a JSON envelope; the returned future yields the server's message id."""
        kwargs: dict[str, Any] = {"ordering_key": ordering_key} if ordering_key else {}
        return self._client().publish(
            topic_path(topic), envelope(message_type, data, schema_version), type=message_type, **kwargs
        )

    def publish(
        self,
        topic: str,
        message_type: str,
        data: dict[str, Any],
        *,
        schema_version: int = 1,
        ordering_key: str = "",
        timeout: float = 10.0,
    ) -> str:
        """Publishes a JSON envelope and waits for the server's message id.

        The publisher client retries transient errors itself; waiting makes a
        failed publish an error of the caller instead of a silent loss. The wait is
        bounded so an HTTP caller answers while Pub/Sub is down; a message the client
        still delivers after that is a duplicate, which every consumer absorbs.
        """
        future = self.publish_async(topic, message_type, data, schema_version=schema_version, ordering_key=ordering_key)
        return str(future.result(timeout=timeout))


@contextlib.contextmanager
def left_for_later(what: str) -> Iterator[None]:
    """For work whose state is already stored where a sweep finds it (a redrive, the next
    reader): a backing service being unavailable is logged, not raised, so the caller
    answers for the change it committed."""
    try:
        yield
    except Exception as exc:
        if not clients.backend_unavailable(exc):
            raise
        structured_logging.log(_log, logging.WARNING, "left for its sweep", what=what, error_type=type(exc).__name__)


@dataclass(frozen=True)
class EventSpec(Generic[Payload]):
    """How one topic-triggered function reads its events."""

    function: str
    message_type: str
    payload: type[Payload]
    schema_versions: frozenset[int] = frozenset({1})
    max_age_seconds: int | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    # True when the handler settles its work in a ledger of its own, keyed by what it works
    # on rather than by the message (a redrive republishes under a new message id). One
    # ledger is then enough; this one only records dropped events. Every handler of the
    # bundle is such a handler (main._event_spec); False is for one with no state of its own.
    handler_is_idempotent: bool = False


@dataclass(frozen=True)
class EventContext:
    event_id: str
    published_at: datetime
    schema_version: int


class Outcome:
    DONE = "done"
    DUPLICATE = "duplicate"
    IN_FLIGHT = "in-flight"
    TOO_OLD = "dropped-too-old"
    MALFORMED = "dropped-malformed"
    FAILED = "failed-permanently"


def _event_time(cloud_event: Any) -> datetime | None:
    raw = cloud_event.get_attributes().get("time")
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def decode(cloud_event: Any, spec: EventSpec[Payload]) -> tuple[Envelope, Payload]:
    """The envelope and typed payload of a Pub/Sub CloudEvent, or PermanentError."""
    try:
        raw = cloud_event.data["message"]["data"]
        body = json.loads(base64.b64decode(raw, validate=True))
        env = Envelope.model_validate(body)
    except (KeyError, TypeError, ValueError, RecursionError, binascii.Error, pydantic.ValidationError) as exc:
        raise PermanentError(f"not a valid envelope ({type(exc).__name__})") from None
    if env.type != spec.message_type:
        raise PermanentError(f"unexpected message type {env.type!r}")
    if env.schema_version not in spec.schema_versions:
        raise PermanentError(f"unsupported schema version {env.schema_version}")
    try:
        return env, spec.payload.model_validate(env.data)
    except pydantic.ValidationError as exc:
        fields = ",".join(_field(e["loc"]) for e in exc.errors(include_input=False))
        raise PermanentError(f"invalid payload fields: {fields}") from None


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _ledger_ref(db: Client, function: str, event_id: str) -> Any:
    # Document ids may not contain '/'; event ids are opaque, so encode them.
    safe = base64.urlsafe_b64encode(f"{function}:{event_id}".encode()).decode().rstrip("=")
    return db.collection(LEDGER_COLLECTION).document(safe)


def _claim(db: Client, ref: Any, spec: EventSpec[Any], event_id: str, now: datetime) -> str | None:
    """Takes the event's lease; returns why not, or None when claimed."""
    from google.cloud import firestore

    settled = (Outcome.DONE, Outcome.TOO_OLD, Outcome.MALFORMED, Outcome.FAILED)
    claim = leases.claim(
        db,
        ref,
        now,
        timedelta(seconds=spec.lease_seconds),
        finished=lambda entry, _: Outcome.DUPLICATE if entry.get("status") in settled else None,
        fields=lambda entry: {
            "function": spec.function,
            "event_id": event_id,
            "status": "processing",
            "attempts": int(entry.get("attempts", 0)) + 1,
            "updated_at": firestore.SERVER_TIMESTAMP,
            "expire_at": now + LEDGER_TTL,
        },
    )
    if claim.busy:
        return Outcome.IN_FLIGHT
    return claim.finished


def _settle(ref: Any, status: str, reason: str = "") -> None:
    from google.cloud import firestore

    leases.release(None, ref, status=status, reason=reason[:300], updated_at=firestore.SERVER_TIMESTAMP)


def _record_drop(db: Client, spec: EventSpec[Any], event_id: str, status: str, reason: str, now: datetime) -> None:
    from google.cloud import firestore

    _ledger_ref(db, spec.function, event_id).set(
        {
            "function": spec.function,
            "event_id": event_id,
            "status": status,
            "reason": reason[:300],
            "updated_at": firestore.SERVER_TIMESTAMP,
            "expire_at": now + LEDGER_TTL,
        },
        merge=True,
    )


def handle_event(
    db: Client,
    cloud_event: Any,
    spec: EventSpec[Payload],
    handler: Callable[[Payload, EventContext], object],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str:
    """Runs `handler` at most once to completion per event; returns the outcome. The event
    ledger (dropped events, and handlers without a ledger of their own) is kept in `db`.

    Raises only when Pub/Sub should redeliver: a RetryableError or any
    unexpected exception (after the catalogue's attempts the dead-letter topic
    keeps the message, so nothing is lost to a bug).
    """
    event_id = str(cloud_event["id"])
    current = now()
    fields = {"function": spec.function, "event_id": event_id}
    max_age = spec.max_age_seconds or settings().default_max_event_age_seconds
    published = _event_time(cloud_event)
    if published is not None and current - published > timedelta(seconds=max_age):
        _record_drop(db, spec, event_id, Outcome.TOO_OLD, f"older than {max_age}s", current)
        structured_logging.log(_log, logging.WARNING, "event dropped: too old", **fields)
        return Outcome.TOO_OLD
    try:
        env, payload = decode(cloud_event, spec)
    except PermanentError as exc:
        _record_drop(db, spec, event_id, Outcome.MALFORMED, str(exc), current)
        structured_logging.log(_log, logging.ERROR, "event dropped: malformed", reason=str(exc), **fields)
        return Outcome.MALFORMED

    context = EventContext(event_id=event_id, published_at=published or current, schema_version=env.schema_version)
    if spec.handler_is_idempotent:
        return _run_idempotent(db, spec, handler, payload, context, fields)

    ref = _ledger_ref(db, spec.function, event_id)
    with contention_is_retryable("the event ledger"):
        refused = _claim(db, ref, spec, event_id, current)
    if refused == Outcome.DUPLICATE:
        structured_logging.log(_log, logging.INFO, "event already handled", **fields)
        return Outcome.DUPLICATE
    if refused == Outcome.IN_FLIGHT:
        # Another delivery holds the lease; come back after it settles.
        raise RetryableError("event is being handled by another delivery")

    try:
        inject_fault(db, spec.function, "before-handler")
        handler(payload, context)
        # The work is done but not yet recorded as done: a crash here must not do it twice.
        inject_fault(db, spec.function, "after-handler")
    except PermanentError as exc:
        _settle(ref, Outcome.FAILED, str(exc))
        structured_logging.log(_log, logging.ERROR, "event failed permanently", reason=str(exc), **fields)
        return Outcome.FAILED
    except Exception as exc:
        _settle(ref, "retrying", type(exc).__name__)
        structured_logging.log(_log, logging.WARNING, "event will be retried", error_type=type(exc).__name__, **fields)
        raise
    _settle(ref, Outcome.DONE)
    structured_logging.log(_log, logging.INFO, "event handled", **fields)
    return Outcome.DONE


def _run_idempotent(
    db: Client,
    spec: EventSpec[Payload],
    handler: Callable[[Payload, EventContext], object],
    payload: Payload,
    context: EventContext,
    fields: dict[str, str],
) -> str:
    """Runs a handler that is its own ledger: a redelivery reaches it and it does nothing twice."""
    try:
        inject_fault(db, spec.function, "before-handler")
        handler(payload, context)
        inject_fault(db, spec.function, "after-handler")
    except PermanentError as exc:
        structured_logging.log(_log, logging.ERROR, "event failed permanently", reason=str(exc), **fields)
        return Outcome.FAILED
    except Exception as exc:
        structured_logging.log(_log, logging.WARNING, "event will be retried", error_type=type(exc).__name__, **fields)
        raise
    structured_logging.log(_log, logging.INFO, "event handled", **fields)
    return Outcome.DONE

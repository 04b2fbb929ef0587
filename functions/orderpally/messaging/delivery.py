"""Sends requested email exactly once per idempotency key: one request, or a batch of them.

The delivery ledger (`email_deliveries/{sha256(idempotency_key)}`) is claimed
before sending (created if missing, else leased in a transaction), so
redeliveries, duplicate publishes, concurrent deliveries and a redrive under a new
message id send one mail per key, whichever single request or batch carries it. A
batch (one message to many recipients, as a notice's fan-out publishes) goes over
one relay connection, rendered and serialised once per language; its ledger is
claimed `CLAIM_CHUNK` mails per commit, each chunk while the one before it is sent,
and settled behind the sending, each commit taking every outcome that piled up while
the previous one ran.

The one window left is a mail the relay accepted before the ledger says so. A
crash then leaves the mail's lease to run out, and the redelivery sends it again,
with the same Message-ID, which receiving servers use to drop the copy. For a
single mail the window is the time between the relay's reply and the settle; in
a batch it holds the mails sent while the commit in flight runs (a few; never
more than `MAX_UNSETTLED`). The mails such a crash had claimed but not sent are
sent by the redelivery once their leases ran out (`LEASE`). A batch stopped by an
exception (an outage, a bug, the fault suite's crash point) first writes the
outcomes of what it sent and frees what it had claimed but not sent, so its
redelivery sends the rest at once and nothing twice.

Outcomes recorded, per mail: sent (with the relay's reply), retrying (4xx,
connection trouble: Pub/Sub redelivers), failed_permanently (5xx, refused
address: never retried), dropped (unknown template, data the template cannot
render). In a batch one refused address does not stop the others; a batch that
leaves any mail for later (deferred, relay unreachable, held by a concurrent
delivery, time budget spent) asks for redelivery once the rest is settled, and
the redelivery skips every mail already settled.

The ledger's reads and writes are `orderpally.messaging.store`'s; this module decides what
to claim, send and settle.
"""

from __future__ import annotations

import contextlib
import email.policy
import logging
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

from orderpally import accounts, clients, events, leases, structured_logging
from orderpally.accounts import DEFAULT_LANGUAGE, preferred_language
from orderpally.messaging import rendering, store
from orderpally.messaging.requests import EmailBatch, EmailRequest

# The ledger's collection and reads, where other capabilities and the tests know them from.
from orderpally.messaging.store import DELIVERIES as DELIVERIES
from orderpally.messaging.store import deliveries_to as deliveries_to
from orderpally.messaging.store import delivery_id as delivery_id
from orderpally.messaging.store import record_of as record_of

LEASE = timedelta(minutes=2)
# Ledger documents one claim transaction reads and leases (Firestore: 500 writes a commit).
# A chunk is claimed while the one before it is sent, so its lease must outlast that.
CLAIM_CHUNK = 50
# Sent mails whose outcome may still wait for a commit when the next is sent: what a crash
# can double at most, however slow Firestore is that moment.
MAX_UNSETTLED = 20
# A batch sends for this long, then leaves the rest to its redelivery: the notice-email
# function's timeout is 60 s (infra/functions.yaml), and what it sent must still be settled.
TIME_BUDGET_SECONDS = 40.0
# The fault suite's crash points between two mails: "after-mail:<n>" once the n-th mail
# this delivery tried is settled or waiting for its commit.
BATCH_FAULTS = "mail_batch"

_log = structured_logging.get_logger("orderpally.messaging")
ALERT_NO_TLS = "smtp-tls-unavailable"


class Status:
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed_permanently"
    DROPPED = "dropped"


FINAL = (Status.SENT, Status.FAILED, Status.DROPPED)


@dataclass(frozen=True)
class RelayReply:
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"[:500]


class RelayRefused(Exception):
    """The relay answered with an error code (4xx: try later, 5xx: never)."""

    def __init__(self, reply: RelayReply) -> None:
        super().__init__(str(reply))
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply.code >= 500


@dataclass(frozen=True)
class Outgoing:
    """A mail as the relay takes it: the envelope's two addresses and the message's bytes."""

    sender: str
    recipient: str
    data: bytes  # CRLF line ends, as SMTP carries them

    @classmethod
    def of(cls, message: EmailMessage) -> Outgoing:
        return cls(
            parseaddr(str(message["From"]))[1],
            parseaddr(str(message["To"]))[1],
            message.as_bytes(policy=email.policy.SMTP),
        )


# Sends a finished mail; returns the relay's reply to DATA, raises RelayRefused or OSError.
Sender = Callable[[Outgoing], RelayReply]


def message_id(idempotency_key: str, domain: str) -> str:
    return f"<{delivery_id(idempotency_key)[:40]}@{domain}>"


def _shared_part(rendered: rendering.RenderedEmail, mail_from: str) -> EmailMessage:
    """Everything of a rendered mail but the headers of its one recipient."""
    message = EmailMessage()
    message["From"] = mail_from
    message["Subject"] = rendered.subject
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = rendered.language  # after the body: set_content drops Content-* headers
    return message


def _own_headers(request: EmailRequest, mail_from: str, now: datetime) -> list[tuple[str, str]]:
    """The headers that differ between the recipients of one rendered mail. All ASCII
    (fields.MailAddress admits ASCII addresses only), so none needs encoding."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "orderpally.invalid"
    return [
        ("To", formataddr(("", request.to_email))),
        ("Date", format_datetime(now)),
        ("Message-ID", message_id(request.idempotency_key, domain)),
    ]


def compose(request: EmailRequest, rendered: rendering.RenderedEmail, mail_from: str, now: datetime) -> EmailMessage:
    message = _shared_part(rendered, mail_from)
    for name, value in _own_headers(request, mail_from, now):
        message[name] = value
    return message


class _Prepared:
    """A rendered mail serialised once: each recipient's copy is its own headers in front of
    the shared bytes, instead of a whole message built and serialised per recipient."""

    def __init__(self, rendered: rendering.RenderedEmail, mail_from: str) -> None:
        self.rendered = rendered
        self._mail_from = mail_from
        self._sender = parseaddr(mail_from)[1]
        self._shared = _shared_part(rendered, mail_from).as_bytes(policy=email.policy.SMTP)

    def to(self, request: EmailRequest, now: datetime) -> Outgoing:
        own = _own_headers(request, self._mail_from, now)
        # The email package's own folding (a long header is refolded as compose's would be).
        headers = b"".join(email.policy.SMTP.fold_binary(name, value) for name, value in own)
        return Outgoing(self._sender, request.to_email, headers + self._shared)


def _accepted(code: int, reply: bytes) -> None:
    if code >= 400:
        raise RelayRefused(RelayReply(code, reply.decode(errors="replace")))


def _recipient_and_data(conn: smtplib.SMTP, mail: Outgoing) -> RelayReply:
    """The rest of a mail transaction whose MAIL the relay accepted, reading each reply so it
    can be recorded and classified."""
    _accepted(*conn.rcpt(mail.recipient))
    answer: bytes | str
    try:
        code, answer = conn.data(mail.data)
    except smtplib.SMTPResponseException as exc:  # the relay refused to take DATA at all
        code, answer = exc.smtp_code, exc.smtp_error
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
    if code >= 400:
        raise RelayRefused(RelayReply(code, text))
    return RelayReply(code, text)


def smtp_sender(connect: Callable[[], smtplib.SMTP]) -> Sender:
    """Sends each mail over a fresh connection (a single request's mail)."""

    def send(mail: Outgoing) -> RelayReply:
        with connect() as conn:
            conn.ehlo_or_helo_if_needed()
            _accepted(*conn.mail(mail.sender))
            return _recipient_and_data(conn, mail)

    return send


@contextlib.contextmanager
def smtp_session(connect: Callable[[], smtplib.SMTP]) -> Iterator[Sender]:
    """Sends many mails (a batch) over one connection: opened at the first, quit at the end.

    After a refusal the open transaction is reset, so the next mail starts clean. A relay
    that ended the connection since the previous mail (idle time, mails per connection)
    answers MAIL with 421 or not at all: nothing of the mail was taken yet, so it is
    sent again once on a fresh connection.
    """
    conn: smtplib.SMTP | None = None

    def close() -> None:
        nonlocal conn
        if conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.close()
            conn = None

    def mail_from(sender: str) -> smtplib.SMTP:
        nonlocal conn
        if conn is not None:
            try:
                code, reply = conn.mail(sender)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                code, reply = 421, b""
            if code != 421:
                _accepted(code, reply)
                return conn
            close()
        conn = connect()
        conn.ehlo_or_helo_if_needed()
        _accepted(*conn.mail(sender))
        return conn

    def send(mail: Outgoing) -> RelayReply:
        try:
            return _recipient_and_data(mail_from(mail.sender), mail)
        except (RelayRefused, UnicodeEncodeError, smtplib.SMTPNotSupportedError):
            if conn is not None:
                try:
                    conn.rset()
                except (OSError, smtplib.SMTPException):
                    close()
            raise
        except (OSError, smtplib.SMTPException):
            close()
            raise

    try:
        yield send
    finally:
        if conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.quit()
            close()


@dataclass(frozen=True)
class _Outcome:
    """What became of one mail in this delivery."""

    status: str  # a ledger Status, or HELD / LEFT for a mail this delivery did not attempt
    # What a single request's delivery raises for it: Pub/Sub redelivers (RetryableError)
    # or the event is recorded as failed (PermanentError).
    error: Exception | None = None
    already: bool = False  # settled by an earlier delivery; nothing sent now
    relay_down: bool = False  # no later mail of the batch can go either


HELD = "held_elsewhere"  # another delivery holds its lease
LEFT = "left_for_redelivery"  # not attempted: the batch stopped before it

# What a claim returns: the mails it took, and what became of the others (by key).
_Claimed = tuple[list[EmailRequest], dict[str, _Outcome]]


def _lease(request: EmailRequest, entry: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What a delivery writes when it takes a mail's lease, over the mail's entry so far (the
    store adds the entry's expiry)."""
    return {
        "template": request.template,
        "account_id": request.account_id,
        "status": Status.SENDING,
        "attempts": int(entry.get("attempts", 0)) + 1,
        "first_attempt_at": entry.get("first_attempt_at", now),
        "updated_at": now,
        leases.LEASE_FIELD: now + LEASE,
    }


def _claim(db: Any, requests: list[EmailRequest], now: datetime) -> _Claimed:
    """Takes the lease of each mail that is neither settled nor held by another delivery;
    returns the mails taken and what became of the others, by key.

    A chunk none of whose mails has an entry yet (a mailing's first delivery) is claimed in
    one batch of creates, which fails whole if any entry exists; then, or otherwise, each
    entry is read and leased in one transaction.
    """
    with events.contention_is_retryable("the delivery ledger"):
        first_claims = [(request.idempotency_key, _lease(request, {}, now)) for request in requests]
        if store.create_entries(db, first_claims, now):
            return list(requests), {}

    def take(entries: list[dict[str, Any]]) -> tuple[_Claimed, list[dict[str, Any] | None]]:
        taken: list[EmailRequest] = []
        others: dict[str, _Outcome] = {}
        writes: list[dict[str, Any] | None] = []
        for request, entry in zip(requests, entries, strict=True):
            lease = None
            if entry.get("status") in FINAL:
                others[request.idempotency_key] = _Outcome(entry["status"], already=True)
            elif leases.held(entry, now):
                busy = events.RetryableError("the same email is being sent by another delivery")
                others[request.idempotency_key] = _Outcome(HELD, busy)
            else:
                lease = _lease(request, entry, now)
                taken.append(request)
            writes.append(lease)
        return (taken, others), writes

    with events.contention_is_retryable("the delivery ledger"):
        return store.lease_entries(db, [request.idempotency_key for request in requests], now, take)


class _Settlements:
    """Writes outcomes to the ledger behind the sending, in one worker thread: each commit
    takes every outcome that piled up while the previous one ran, so a batch does not wait on
    Firestore between mails, and the ledger trails the relay by about one commit. Once
    `MAX_UNSETTLED` outcomes are unwritten, the sending waits for the commit in flight."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._pending: list[tuple[str, dict[str, Any]]] = []  # (idempotency key, outcome fields)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-ledger")
        self._commit: Future[None] | None = None
        self._committing = 0  # outcomes in the commit in flight

    def add(self, idempotency_key: str, status: str, now: datetime, **fields: Any) -> None:
        self._pending.append((idempotency_key, {"status": status, "updated_at": now, **fields}))
        if self._commit is None or self._commit.done() or len(self._pending) + self._committing >= MAX_UNSETTLED:
            self._next()

    def _next(self) -> None:
        if self._commit is not None:
            commit, self._commit = self._commit, None
            commit.result()  # waits for it; raises what it raised
            self._committing = 0
        if self._pending:
            writes, self._pending = self._pending, []
            self._commit = self._writer.submit(store.settle, self._db, writes)
            self._committing = len(writes)

    def close(self) -> None:
        """Waits until every outcome is written; raises when one could not be."""
        try:
            while self._commit is not None or self._pending:
                self._next()
        finally:
            self._writer.shutdown(wait=True)


def _stored_languages(db: Any, requests: list[EmailRequest]) -> dict[str, object]:
    """The language each recipient's account stored, read in few round trips."""
    account_ids = sorted({r.account_id for r in requests if r.account_id})
    return {account_id: account.get("language") for account_id, account in accounts.existing(db, account_ids)}


def _attempt(
    request: EmailRequest, prepared: _Prepared, send: Sender, now: Callable[[], datetime]
) -> tuple[_Outcome, dict[str, Any]]:
    """Sends one claimed mail: what became of it, and what the ledger records beside its status."""
    try:
        reply = send(prepared.to(request, now()))
    except RelayRefused as exc:
        if exc.permanent:
            refused = events.PermanentError(f"relay refused permanently ({exc.reply.code})")
            return _Outcome(Status.FAILED, refused), {"smtp_response": str(exc.reply)}
        deferred = events.RetryableError(f"relay deferred ({exc.reply.code})")
        return _Outcome(Status.RETRYING, deferred), {"smtp_response": str(exc.reply)}
    except clients.SmtpTlsUnavailable:
        # Clause 5.3: never sent in clear. Kept for redelivery, and someone is told.
        structured_logging.log(_log, logging.ERROR, "relay offers no TLS; email kept for retry", alert=ALERT_NO_TLS)
        no_tls = events.RetryableError("relay offers no TLS")
        return _Outcome(Status.RETRYING, no_tls, relay_down=True), {"smtp_response": "SmtpTlsUnavailable"}
    except (UnicodeEncodeError, smtplib.SMTPNotSupportedError) as exc:
        # An address the relay cannot carry (not ASCII, no SMTPUTF8): no retry would help.
        undeliverable = events.PermanentError(f"address not deliverable ({type(exc).__name__})")
        return _Outcome(Status.FAILED, undeliverable), {"smtp_response": type(exc).__name__}
    except (OSError, smtplib.SMTPException) as exc:
        unreachable = events.RetryableError(f"relay unreachable ({type(exc).__name__})")
        return _Outcome(Status.RETRYING, unreachable, relay_down=True), {"smtp_response": type(exc).__name__}
    sent = {"smtp_response": str(reply), "language": prepared.rendered.language, "sent_at": now()}
    return _Outcome(Status.SENT), sent


class _ClaimsAhead:
    """The chunks of a delivery's mails, each claimed while the chunk before it is being sent:
    only the first claim transaction holds up the relay."""

    def __init__(self, db: Any, requests: list[EmailRequest], now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now
        self._waiting = [requests[start : start + CLAIM_CHUNK] for start in range(0, len(requests), CLAIM_CHUNK)]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-claims")
        self._ahead: tuple[list[EmailRequest], Future[_Claimed]] | None = None
        self._claim_next()

    def _claim_next(self) -> None:
        if self._waiting:
            chunk = self._waiting.pop(0)
            self._ahead = (chunk, self._pool.submit(_claim, self._db, chunk, self._now()))

    def next(self) -> _Claimed | None:
        """The next chunk's mails this delivery claimed, and what became of the others (by
        key); None after the last chunk."""
        if self._ahead is None:
            return None
        (_, claim), self._ahead = self._ahead, None
        claimed = claim.result()
        self._claim_next()
        return claimed

    def stop(self) -> tuple[list[EmailRequest], list[EmailRequest]]:
        """Claims nothing more; returns the mails claimed ahead (to be freed) and every mail
        of the chunks not handed out."""
        taken: list[EmailRequest] = []
        rest = [request for chunk in self._waiting for request in chunk]
        if self._ahead is not None:
            chunk, claim = self._ahead
            rest = chunk + rest
            # A claim that failed took nothing.
            with contextlib.suppress(Exception):
                taken = claim.result()[0]
        self._ahead, self._waiting = None, []
        self._pool.shutdown(wait=False)
        return taken, rest


def _deliver(
    db: Any,
    template: str,
    data: dict[str, Any],
    requests: list[EmailRequest],
    *,
    send: Sender,
    mail_from: str,
    now: Callable[[], datetime],
    in_time: Callable[[], bool] = lambda: True,
) -> dict[str, _Outcome]:
    """Sends every mail of `requests` (distinct keys, all of `template` with `data`) that no
    delivery settled or holds; returns what became of each, by key."""
    claims = _ClaimsAhead(db, requests, now)
    # The recipients' stored languages are read while the first chunk is being claimed.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-languages")
    stored_languages = reader.submit(_stored_languages, db, requests)
    reader.shutdown(wait=False)
    prepared: dict[str, _Prepared] = {}  # by language: rendered and serialised once
    outcomes: dict[str, _Outcome] = {}
    settlements = _Settlements(db)
    unsent: list[EmailRequest] = []  # claimed by this delivery, not yet attempted
    stopped: Exception | None = None  # why the rest is left for the redelivery
    tried = 0
    try:
        while stopped is None and (claimed := claims.next()) is not None:
            unsent, others = claimed
            outcomes.update(others)
            while unsent and stopped is None:
                if not in_time():
                    stopped = events.RetryableError("the time budget is spent")
                    break
                # Out of `unsent` before it is tried: a mail whose sending failed in an unforeseen
                # way keeps its lease rather than be freed, for the relay may have taken it.
                request = unsent.pop(0)
                stored = stored_languages.result().get(request.account_id or "")
                language = preferred_language(stored, request.language or DEFAULT_LANGUAGE)
                try:
                    if language not in prepared:
                        prepared[language] = _Prepared(rendering.render(template, language, data), mail_from)
                except (rendering.UnknownTemplate, rendering.TemplateDataError) as exc:
                    outcome = _Outcome(Status.DROPPED, events.PermanentError(f"cannot render {template}"))
                    fields: dict[str, Any] = {"reason": f"{type(exc).__name__}: {exc}"[:300]}
                else:
                    outcome, fields = _attempt(request, prepared[language], send, now)
                outcomes[request.idempotency_key] = outcome
                settlements.add(request.idempotency_key, outcome.status, now(), **fields)
                if outcome.relay_down:
                    stopped = outcome.error
                tried += 1
                events.inject_fault(db, BATCH_FAULTS, f"after-mail:{tried}")
        taken_ahead, rest = claims.stop()
        for request in unsent + taken_ahead:  # freed, so the redelivery need not wait for the leases
            settlements.add(request.idempotency_key, Status.RETRYING, now())
        outcomes.update({request.idempotency_key: _Outcome(LEFT, stopped) for request in unsent + rest})
    except BaseException:
        # Stopped by a bug, an outage or a crash point: the outcomes of what was sent are
        # written, and what was claimed but not attempted is freed.
        taken_ahead, _ = claims.stop()
        for request in unsent + taken_ahead:
            settlements.add(request.idempotency_key, Status.RETRYING, now())
        settlements.close()
        raise
    settlements.close()
    return outcomes


def deliver(
    db: Any,
    request: EmailRequest,
    *,
    send: Sender,
    mail_from: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str:
    """Sends the request's email unless its key was already settled; returns the final status.

    Raises events.RetryableError when Pub/Sub should redeliver, events.PermanentError
    when the request can never be sent.
    """
    outcome = _deliver(db, request.template, request.data, [request], send=send, mail_from=mail_from, now=now)[
        request.idempotency_key
    ]
    log_fields = {"template": request.template, "delivery_id": delivery_id(request.idempotency_key)}
    if outcome.already:
        structured_logging.log(_log, logging.INFO, "email already settled", status=outcome.status, **log_fields)
    elif outcome.status == Status.SENT:
        structured_logging.log(_log, logging.INFO, "email sent", **log_fields)
    if outcome.error is not None:
        raise outcome.error from None
    return outcome.status


def deliver_batch(
    db: Any,
    batch: EmailBatch,
    *,
    send: Sender,
    mail_from: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Callable[[], float] = time.monotonic,
    time_budget_seconds: float = TIME_BUDGET_SECONDS,
) -> dict[str, int]:
    """Sends each recipient's mail unless its key was already settled; returns how many mails
    ended how (a Status, or already_<status>, held_elsewhere, left_for_redelivery).

    A recipient the relay refuses for good is recorded and the others still go. Raises
    events.RetryableError, once everything sent is settled, when any mail is left for later.
    """
    distinct = list({request.idempotency_key: request for request in batch.requests()}.values())
    deadline = clock() + time_budget_seconds
    outcomes = _deliver(
        db,
        batch.template,
        batch.data,
        distinct,
        send=send,
        mail_from=mail_from,
        now=now,
        in_time=lambda: clock() < deadline,
    ).values()
    counts = dict(Counter(f"already_{o.status}" if o.already else o.status for o in outcomes))
    structured_logging.log(_log, logging.INFO, "email batch delivered", template=batch.template, **counts)
    left = sum(isinstance(o.error, events.RetryableError) for o in outcomes)
    if left:
        raise events.RetryableError(f"{left} of {len(distinct)} mails left for the redelivery")
    return counts


def deliver_requested(
    db: Any, mail: EmailRequest | EmailBatch, *, connect: Callable[[], smtplib.SMTP], mail_from: str
) -> object:
    """Delivers what the notice-email topic carried: one mail over a connection of its own, or
    a batch over one connection for all its mails."""
    if isinstance(mail, EmailBatch):
        with smtp_session(connect) as send:
            return deliver_batch(db, mail, send=send, mail_from=mail_from)
    return deliver(db, mail, send=smtp_sender(connect), mail_from=mail_from)

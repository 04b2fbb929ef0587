"""Sends one requested email exactly once per idempotency key.

The delivery ledger (`email_deliveries/{sha256(idempotency_key)}`) is claimed
in a transaction before sending, so redeliveries, duplicate publishes and
concurrent deliveries of one request send one mail. The one window left is a
crash between the relay accepting the mail and the ledger saying so: the
redelivery then sends again, with the same Message-ID, which receiving
servers use to drop the copy.

Outcomes recorded: sent (with the relay's reply), retrying (4xx, connection
trouble: Pub/Sub redelivers), failed_permanently (5xx, refused address: never
retried), dropped (unknown template, data the template cannot render).
"""

from __future__ import annotations

import email.policy
import logging
import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

from orderpally import accounts, clients, events, leases, structured_logging
from orderpally.accounts import DEFAULT_LANGUAGE, preferred_language
from orderpally.messaging import rendering
from orderpally.messaging.requests import EmailRequest, key_digest

DELIVERIES = "email_deliveries"
LEASE = timedelta(minutes=2)
# Long after Pub/Sub's 7-day redelivery window and any resend a capability might make.
LEDGER_TTL = timedelta(days=400)

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


# Sends a finished message; returns the relay's reply to DATA, raises RelayRefused or OSError.
Sender = Callable[[EmailMessage], RelayReply]


def delivery_id(idempotency_key: str) -> str:
    return key_digest(idempotency_key)


def message_id(idempotency_key: str, domain: str) -> str:
    return f"<{delivery_id(idempotency_key)[:40]}@{domain}>"


def compose(request: EmailRequest, rendered: rendering.RenderedEmail, mail_from: str, now: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr(("", request.to_email))
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "orderpally.invalid"
    message["Message-ID"] = message_id(request.idempotency_key, domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = rendered.language  # after the body: set_content drops Content-* headers
    return message


def smtp_sender(connect: Callable[[], smtplib.SMTP]) -> Sender:
    """Sends over a fresh connection, reading each reply so it can be recorded and classified."""

    def send(message: EmailMessage) -> RelayReply:
        sender = parseaddr(str(message["From"]))[1]
        recipient = parseaddr(str(message["To"]))[1]
        with connect() as conn:
            conn.ehlo_or_helo_if_needed()
            for command, args in ((conn.mail, (sender,)), (conn.rcpt, (recipient,))):
                code, reply = command(*args)
                if code >= 400:
                    raise RelayRefused(RelayReply(code, reply.decode(errors="replace")))
            answer: bytes | str
            try:
                code, answer = conn.data(message.as_bytes(policy=email.policy.SMTP))  # CRLF line ends
            except smtplib.SMTPResponseException as exc:  # the relay refused to take DATA at all
                code, answer = exc.smtp_code, exc.smtp_error
            text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
            if code >= 400:
                raise RelayRefused(RelayReply(code, text))
            return RelayReply(code, text)

    return send


def _language(db: Any, request: EmailRequest) -> str:
    fallback = request.language or DEFAULT_LANGUAGE
    if not request.account_id:
        return fallback
    stored = (accounts.load(db, request.account_id) or {}).get("language")
    return preferred_language(stored, fallback)


def _claim(db: Any, ref: Any, request: EmailRequest, now: datetime) -> str | None:
    """Takes the delivery's lease; returns the final status when it was already settled."""
    claim = leases.claim(
        db,
        ref,
        now,
        LEASE,
        finished=lambda entry, _: entry.get("status") if entry.get("status") in FINAL else None,
        fields=lambda entry: {
            "template": request.template,
            "account_id": request.account_id,
            "status": Status.SENDING,
            "attempts": int(entry.get("attempts", 0)) + 1,
            "first_attempt_at": entry.get("first_attempt_at", now),
            "updated_at": now,
            "expire_at": now + LEDGER_TTL,
        },
    )
    if claim.busy:
        raise events.RetryableError("the same email is being sent by another delivery")
    return claim.finished


def _settle(ref: Any, status: str, now: datetime, **fields: Any) -> None:
    leases.release(None, ref, status=status, updated_at=now, **fields)


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
    ref = db.collection(DELIVERIES).document(delivery_id(request.idempotency_key))
    log_fields = {"template": request.template, "delivery_id": ref.id}
    with events.contention_is_retryable("the delivery ledger"):
        settled = _claim(db, ref, request, now())
    if settled is not None:
        structured_logging.log(_log, logging.INFO, "email already settled", status=settled, **log_fields)
        return settled
    try:
        rendered = rendering.render(request.template, _language(db, request), request.data)
    except (rendering.UnknownTemplate, rendering.TemplateDataError) as exc:
        _settle(ref, Status.DROPPED, now(), reason=f"{type(exc).__name__}: {exc}"[:300])
        raise events.PermanentError(f"cannot render {request.template}") from None
    message = compose(request, rendered, mail_from, now())
    try:
        reply = send(message)
    except RelayRefused as exc:
        if exc.permanent:
            _settle(ref, Status.FAILED, now(), smtp_response=str(exc.reply))
            raise events.PermanentError(f"relay refused permanently ({exc.reply.code})") from None
        _settle(ref, Status.RETRYING, now(), smtp_response=str(exc.reply))
        raise events.RetryableError(f"relay deferred ({exc.reply.code})") from None
    except clients.SmtpTlsUnavailable:
        # Clause 5.3: never sent in clear. Kept for redelivery, and someone is told.
        _settle(ref, Status.RETRYING, now(), smtp_response="SmtpTlsUnavailable")
        structured_logging.log(
            _log, logging.ERROR, "relay offers no TLS; email kept for retry", alert=ALERT_NO_TLS, **log_fields
        )
        raise events.RetryableError("relay offers no TLS") from None
    except (UnicodeEncodeError, smtplib.SMTPNotSupportedError) as exc:
        # An address the relay cannot carry (not ASCII, no SMTPUTF8): no retry would help.
        _settle(ref, Status.FAILED, now(), smtp_response=type(exc).__name__)
        raise events.PermanentError(f"address not deliverable ({type(exc).__name__})") from None
    except (OSError, smtplib.SMTPException) as exc:
        _settle(ref, Status.RETRYING, now(), smtp_response=type(exc).__name__)
        raise events.RetryableError(f"relay unreachable ({type(exc).__name__})") from None
    _settle(ref, Status.SENT, now(), smtp_response=str(reply), language=rendered.language, sent_at=now())
    structured_logging.log(_log, logging.INFO, "email sent", language=rendered.language, **log_fields)
    return Status.SENT


def deliveries_to(db: Any, account_id: str) -> Iterator[dict[str, Any]]:
    """Every mail delivery recorded for the account (its records request lists them)."""
    from google.cloud.firestore import FieldFilter

    for snap in db.collection(DELIVERIES).where(filter=FieldFilter("account_id", "==", account_id)).stream():
        yield snap.to_dict() or {}


def record_of(db: Any, idempotency_key: str) -> dict[str, Any]:
    """The delivery record of the mail requested under `idempotency_key`; empty when there is none (yet)."""
    return db.collection(DELIVERIES).document(delivery_id(idempotency_key)).get().to_dict() or {}

"""How any capability asks for an email: publish one request to the notice-email topic.

The notice-email function renders `template` in the recipient's language (a
stored account preference wins over `language`) and sends it exactly once per
`idempotency_key`, however often the request is delivered or published.

A mail to many recipients (a notice to every customer) goes as an `EmailBatch`:
one message with the template and its data once and up to `MAX_RECIPIENTS`
recipients, each with an idempotency key of its own, sent over one relay
connection. Each recipient is still sent once per key, whichever batch or single
request carries it. A batch stays far below Pub/Sub's 10 MB message limit: a
notice's data is at most about 130 kB (two 20,000-character bodies) and a
recipient under 700 bytes.

A mail that announces a state change is staged in the mail outbox
(`mail_outbox/{sha256(idempotency_key)}`) in the same transaction or batch as the
change, then published and unstaged. A crash in between leaves it staged; the
redrive schedule publishes it again, and the key keeps it to one mail.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pydantic

from orderpally import events, fields, structured_logging
from orderpally.accounts import Language
from orderpally.messaging import store

# Where the capabilities, the redrive and the tests know the outbox's name and keys from.
from orderpally.messaging.store import OUTBOX as OUTBOX
from orderpally.messaging.store import key_digest as key_digest

TOPIC = "notice-email"
MESSAGE_TYPE = "notice_email.requested"
# Recipients of one batch, at most: the per-recipient ledger of a batch is claimed and
# settled within one Firestore commit each (500 writes at most).
MAX_RECIPIENTS = 500
ALERT_UNREADABLE = "staged-email-unreadable"

_log = structured_logging.get_logger("orderpally.messaging")


class EmailRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    # Stable for the thing being announced, e.g. "signup-verify:<uid>:<n>": a
    # duplicate publish with the same key sends nothing more.
    idempotency_key: str = pydantic.Field(min_length=1, max_length=300)
    template: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    to_email: fields.MailAddress
    account_id: str | None = pydantic.Field(default=None, max_length=128)
    language: Language | None = None
    data: dict[str, Any] = pydantic.Field(default_factory=dict)


class Recipient(pydantic.BaseModel):
    """One mail of a batch: what differs between its recipients."""

    model_config = pydantic.ConfigDict(extra="forbid")

    idempotency_key: str = pydantic.Field(min_length=1, max_length=300)
    to_email: fields.MailAddress
    account_id: str | None = pydantic.Field(default=None, max_length=128)
    language: Language | None = None


class EmailBatch(pydantic.BaseModel):
    """One template and its data for many recipients, in one message."""

    model_config = pydantic.ConfigDict(extra="forbid")

    template: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    data: dict[str, Any] = pydantic.Field(default_factory=dict)
    recipients: list[Recipient] = pydantic.Field(min_length=1, max_length=MAX_RECIPIENTS)

    def requests(self) -> list[EmailRequest]:
        """One request per recipient, as if each had been published alone."""
        return [
            EmailRequest.model_construct(template=self.template, data=self.data, **dict(recipient))
            for recipient in self.recipients
        ]


class MailRequest(pydantic.RootModel[EmailRequest | EmailBatch]):
    """What the notice-email topic carries: one mail, or one mail to many recipients.

    Both are forbidden extra fields, so a message is the one or the other, never both."""


# How a use case sends one request: handed to it, so a test can keep what would be sent.
SendEmail = Callable[[EmailRequest], object]


def request_email(publisher: events.Publisher, request: EmailRequest) -> str:
    """Publishes the request; returns the Pub/Sub message id."""
    return publisher.publish(TOPIC, MESSAGE_TYPE, request.model_dump(mode="json"))


def sender(publisher: events.Publisher) -> SendEmail:
    """`request_email` through `publisher`: the `SendEmail` of the deployed functions."""
    return functools.partial(request_email, publisher)


def mail(
    send_email: SendEmail,
    template: str,
    to: str,
    key: str,
    account_id: str | None,
    language: Language | None,
    **data: Any,
) -> None:
    """Requests one mail of `template` to `to`, once per idempotency `key`."""
    send_email(
        EmailRequest(
            idempotency_key=key, template=template, to_email=to, account_id=account_id, language=language, data=data
        )
    )


def stage_email(writer: Any, db: Any, request: EmailRequest, now: datetime) -> None:
    """Writes `request` to the outbox through `writer` (a transaction or batch): it commits with the change.

    For a change outside Firestore, stage it in a batch of its own before the change and
    unstage it if the change fails.
    """
    # No expire_at: a staged mail leaves the outbox only once it has been published.
    store.stage(writer, db, request.idempotency_key, {"request": request.model_dump(mode="json"), "staged_at": now})


def unstage_email(db: Any, request: EmailRequest) -> None:
    store.unstage(db, request.idempotency_key)


def send_staged(db: Any, request: EmailRequest, send_email: SendEmail) -> None:
    """Publishes a committed staged request, then takes it out of the outbox."""
    send_email(request)
    unstage_email(db, request)


def redrive_staged(
    db: Any,
    now: datetime,
    stale_after: timedelta,
    send_email: SendEmail,
    limit: int = 200,
) -> int:
    """Publishes every request staged for longer than `stale_after`; returns how many."""
    sent = 0
    for staged_id, staged in store.staged_by(db, now - stale_after, limit):
        try:
            request = EmailRequest.model_validate(staged["request"])
        except (KeyError, pydantic.ValidationError):
            # Kept for an operator (the alert names it), and passed over so the others still go.
            structured_logging.log(
                _log, logging.ERROR, "staged email unreadable", staged_id=staged_id, alert=ALERT_UNREADABLE
            )
            continue
        send_staged(db, request, send_email)
        sent += 1
    return sent

"""What a change announces, committed with the change: its audit entry and its email.

A handler stages both in the transaction or batch that writes the change
(`stage`), commits, then announces them (`announce`): the audit entry is linked
into the account's chain and the email published. A crash or an outage after
the commit loses neither: a pending audit entry is linked by the chain's next
reader or writer or the daily check, and a staged email is published by the
`archive-redrive` schedule. The email's idempotency key keeps it to one mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orderpally import audit, events
from orderpally.messaging.requests import EmailRequest, SendEmail, send_staged, stage_email

FAULTS = "announce"  # the fault suite's crash point between a commit and its announcement


@dataclass(frozen=True)
class Staged:
    chain: audit.Chain
    entry: Any
    notice: EmailRequest | None


def stage(
    writer: Any, db: Any, account_id: str, event: audit.AuditEvent, notice: EmailRequest | None, now: datetime
) -> Staged:
    """Writes the account's audit entry, and the notice if any, through the change's own `writer`."""
    return stage_on(writer, db, audit.account_chain(db, account_id), event, notice, now)


def stage_on(
    writer: Any, db: Any, chain: audit.Chain, event: audit.AuditEvent, notice: EmailRequest | None, now: datetime
) -> Staged:
    """As `stage`, on any chain (an incident's history, say)."""
    entry = audit.stage(writer, chain, event, now)
    if notice is not None:
        stage_email(writer, db, notice, now)
    return Staged(chain, entry, notice)


def announce(db: Any, staged: Staged, send_email: SendEmail | None = None) -> None:
    """After the commit: links the audit entry and publishes the notice (through `send_email`,
    which a staged notice needs), or leaves them for later."""
    if staged.notice is not None and send_email is None:
        raise TypeError("a staged notice is announced through a send_email")
    events.inject_fault(db, FAULTS, "after-commit")
    with events.left_for_later("audit entry"):
        audit.link(staged.chain, until=staged.entry)
    if staged.notice is not None and send_email is not None:
        with events.left_for_later("notice email"):
            send_staged(db, staged.notice, send_email)

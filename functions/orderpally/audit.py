"""The account-scoped audit trail (agreement 1.1(a), 1.1(b)).

Append-only: entries are created, never updated or deleted by the service,
and ordered by Firestore server time. Entries hold identifiers and a short
vocabulary of actions, never secrets; the client address is kept because the
customer is shown where their account was used from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orderpally import clients

ACCOUNTS = "accounts"
AUDIT_TRAIL = "audit_trail"


@dataclass(frozen=True)
class Actor:
    """Who did it: the customer, a staff member (with role), an API key or the system."""

    kind: str  # customer | staff | api_key | system
    id: str
    role: str | None = None


SYSTEM = Actor(kind="system", id="orderpally")


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: Actor
    client_address: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def trail(account_id: str) -> Any:
    return clients.firestore_client().collection(ACCOUNTS).document(account_id).collection(AUDIT_TRAIL)


def record(account_id: str, event: AuditEvent) -> str:
    """Appends `event` to the account's trail; returns the entry id."""
    from google.cloud import firestore

    ref = trail(account_id).document()
    ref.create(
        {
            "action": event.action,
            "actor": {"kind": event.actor.kind, "id": event.actor.id, "role": event.actor.role},
            "client_address": event.client_address,
            "reason": event.reason,
            "details": event.details,
            "at": firestore.SERVER_TIMESTAMP,
        }
    )
    return ref.id


def entries(account_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest entries first."""
    from google.cloud import firestore

    query = trail(account_id).order_by("at", direction=firestore.Query.DESCENDING).limit(limit)
    return [{"id": snap.id, **(snap.to_dict() or {})} for snap in query.stream()]


def page(account_id: str, limit: int, before: tuple[datetime, str] | None = None) -> list[dict[str, Any]]:
    """Newest first, starting after the entry `before` names (its time and id)."""
    from google.cloud import firestore

    query = (
        trail(account_id)
        .order_by("at", direction=firestore.Query.DESCENDING)
        .order_by("__name__", direction=firestore.Query.DESCENDING)
    )
    if before:
        query = query.start_after({"at": before[0], "__name__": trail(account_id).document(before[1])})
    return [{"id": snap.id, **(snap.to_dict() or {})} for snap in query.limit(limit).stream()]

"""The account-scoped audit trail (agreement 1.1(a), 1.1(b), 5.8): append-only and hash-chained.

Entries are created, never updated or deleted by the service. Each account's
entries form a chain: entry n carries the hash of entry n-1 and its own hash
over its content, and `audit_chains/{account}` holds the head. An entry added
in a transaction with the head, so concurrent writers cannot fork the chain.
Editing or deleting any past entry breaks a link that `verify` finds.

Entries hold identifiers and a short vocabulary of actions, never secrets;
the client address is kept because the customer is shown where their account
was used from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orderpally import clients

ACCOUNTS = "accounts"
AUDIT_TRAIL = "audit_trail"
CHAINS = "audit_chains"
GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who did it: the customer, a staff member (with role), an API key, anonymous or the system."""

    kind: str  # customer | staff | api_key | anonymous | system
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


def entry_id(seq: int) -> str:
    return f"{seq:012d}"


def entry_hash(body: dict[str, Any]) -> str:
    """SHA-256 over the entry's canonical JSON (everything but its own hash and the server's receipt time)."""
    content = {k: v for k, v in body.items() if k not in ("hash", "recorded_at")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"not canonical: {type(value).__name__}")


@dataclass(frozen=True)
class Chain:
    """Where one chain lives: its entries and its head."""

    entries: Any
    head: Any


def account_chain(account_id: str) -> Chain:
    return Chain(trail(account_id), clients.firestore_client().collection(CHAINS).document(account_id))


def record(account_id: str, event: AuditEvent, now: datetime | None = None) -> str:
    """Appends `event` to the account's chain; returns the entry id."""
    return append(account_chain(account_id), event, now)


def append(chain: Chain, event: AuditEvent, now: datetime | None = None) -> str:
    """Appends `event` to `chain` in a transaction with its head; returns the entry id."""
    from google.cloud import firestore

    db = clients.firestore_client()
    head_ref = chain.head
    at = (now or datetime.now(UTC)).astimezone(UTC)

    @firestore.transactional
    def append(transaction: Any) -> str:
        head = head_ref.get(transaction=transaction)
        seq = int(head.get("seq")) + 1 if head.exists else 1
        body = {
            "seq": seq,
            "action": event.action,
            "actor": {"kind": event.actor.kind, "id": event.actor.id, "role": event.actor.role},
            "client_address": event.client_address,
            "reason": event.reason,
            "details": event.details,
            "at": at,
            "prev_hash": head.get("hash") if head.exists else GENESIS,
        }
        body["hash"] = entry_hash(body)
        transaction.create(chain.entries.document(entry_id(seq)), {**body, "recorded_at": firestore.SERVER_TIMESTAMP})
        transaction.set(head_ref, {"seq": seq, "hash": body["hash"], "updated_at": at})
        return entry_id(seq)

    # Writers to one account queue on its head; retry long rather than lose an entry.
    return append(db.transaction(max_attempts=30))


def append_once(chain: Chain, event: AuditEvent, now: datetime | None = None) -> bool:
    """Appends `event` unless an entry with its action and details is already there.

    For work resumed after a crash, under a lease, so no two callers check at once.
    """
    from google.cloud.firestore import FieldFilter

    query = chain.entries.where(filter=FieldFilter("action", "==", event.action))
    for key, value in sorted((event.details or {}).items()):
        query = query.where(filter=FieldFilter(f"details.{key}", "==", value))
    if any(True for _ in query.limit(1).stream()):
        return False
    append(chain, event, now)
    return True


def page(account_id: str, limit: int, before_seq: int | None = None) -> list[dict[str, Any]]:
    """The account's trail, newest first, starting below `before_seq`."""
    return chain_page(account_chain(account_id), limit, before_seq)


def chain_page(chain: Chain, limit: int, before_seq: int | None = None) -> list[dict[str, Any]]:
    """Any chain's entries, newest first, starting below `before_seq`."""
    from google.cloud import firestore

    query = chain.entries.order_by("seq", direction=firestore.Query.DESCENDING)
    if before_seq is not None:
        query = query.start_after({"seq": before_seq})
    return [_public(snap) for snap in query.limit(limit).stream()]


def _public(snap: Any) -> dict[str, Any]:
    entry = snap.to_dict() or {}
    entry.pop("recorded_at", None)
    return {"id": snap.id, **entry}


def entries(account_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest entries first."""
    return page(account_id, limit)


@dataclass(frozen=True)
class Verdict:
    account_id: str
    entries: int
    intact: bool
    first_broken_seq: int | None = None
    problem: str | None = None


def verify(account_id: str, chain: Chain | None = None) -> Verdict:
    """Walks the chain from its start; reports the first entry that was changed, removed or inserted."""
    chain = chain or account_chain(account_id)
    head = chain.head.get()
    previous, expected_seq, count = GENESIS, 1, 0
    for snap in chain.entries.order_by("seq").stream():
        body = snap.to_dict() or {}
        seq = body.get("seq")
        count += 1
        if seq != expected_seq or snap.id != entry_id(expected_seq):
            return Verdict(account_id, count, False, expected_seq, "an entry is missing or out of place")
        if body.get("prev_hash") != previous:
            return Verdict(account_id, count, False, seq, "the link to the previous entry is broken")
        if entry_hash(body) != body.get("hash"):
            return Verdict(account_id, count, False, seq, "the entry's content was changed")
        previous, expected_seq = body["hash"], expected_seq + 1
    head_seq = int(head.get("seq")) if head.exists else 0
    if head_seq != count or (head.exists and head.get("hash") != previous):
        return Verdict(
            account_id, count, False, count + 1 if head_seq > count else head_seq, "the newest entries were removed"
        )
    return Verdict(account_id, count, True)


ALERT_CHAIN_BROKEN = "audit-chain-broken"
# Chains written to within this window are checked by the scheduled verification.
RECENT = timedelta(hours=48)


def verify_recent(now: datetime, limit: int = 2000) -> dict[str, Any]:
    """Verifies every chain written to lately; logs an alert for each broken one."""
    import logging

    from google.cloud import firestore

    from orderpally import structured_logging

    log = structured_logging.get_logger("orderpally.audit")
    heads = (
        clients.firestore_client()
        .collection(CHAINS)
        .where(filter=firestore.FieldFilter("updated_at", ">=", now - RECENT))
        .limit(limit)
        .stream()
    )
    checked, broken = 0, []
    for head in heads:
        verdict = verify(head.id)
        checked += 1
        if not verdict.intact:
            broken.append(head.id)
            structured_logging.log(
                log,
                logging.ERROR,
                "audit chain broken",
                account_id=head.id,
                first_broken_seq=verdict.first_broken_seq,
                problem=verdict.problem,
                alert=ALERT_CHAIN_BROKEN,
            )
    return {"checked": checked, "broken": broken}

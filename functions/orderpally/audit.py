"""The account-scoped audit trail (agreement 1.1(a), 1.1(b), 5.8): append-only and hash-chained.

Entries are created, never updated or deleted by the service. Each account's
entries form a chain: entry n carries the hash of entry n-1 and its own hash
over its content, and `audit_chains/{account}` holds the head. Editing or
deleting any past entry breaks a link that `verify` finds.

Writers do not queue on the head one by one (a burst of requests for one account
would hold every worker thread). Each writes its entry to the chain's pending list
(`audit_chains/{chain}/audit_pending`) first, durably and without contention; then
one linker at a time, under a short lock, moves every pending entry into the chain,
in order, in one transaction with the head, so concurrent writers cannot fork it.
Writers on a user's critical path (a sign-in) only stage their entry: the commit is
their durable receipt, and `sequence_audit_trails` (every minute) links whatever is
pending, as Certificate Transparency's and Rekor's sequencers integrate their queues.
Readers link what is pending before they read (`settle`), so they always see the whole
sequenced log. What a crash or a long queue leaves pending is linked the same way.

Entries hold identifiers and a short vocabulary of actions, never secrets;
the client address is kept because the customer is shown where their account
was used from.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import accounts, clients, leases

if TYPE_CHECKING:
    from google.cloud.firestore import Client

AUDIT_TRAIL = "audit_trail"
CHAINS = "audit_chains"
PENDING = "audit_pending"  # audit_chains/{chain}/audit_pending/{id}: entries not yet in the chain
GENESIS = "0" * 64
ENTRIES_FIELD = "entries"  # on heads and pending entries: where the chain's entries live
LINK_BATCH = 100  # entries per linking transaction (two writes each, under Firestore's 500)
LINK_LOCKS = "audit_link_locks"  # {chain head id}: who links that chain now; an expiry only
LINK_LOCK_LEASE = timedelta(seconds=30)
LINK_PATIENCE = timedelta(seconds=10)  # how long a writer waits for its entry to be linked


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


def trail(db: Client, account_id: str) -> Any:
    return accounts.document(db, account_id).collection(AUDIT_TRAIL)


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
    """Where one chain lives: its entries and its head, in the database `db`."""

    db: Client
    entries: Any
    head: Any


def account_chain(db: Client, account_id: str) -> Chain:
    return Chain(db, trail(db, account_id), db.collection(CHAINS).document(account_id))


def record(db: Client, account_id: str, event: AuditEvent, now: datetime | None = None) -> None:
    """Appends `event` to the account's chain."""
    append(account_chain(db, account_id), event, now)


def pending(chain: Chain) -> Any:
    return chain.head.collection(PENDING)


def _path(collection: Any) -> str:
    return f"{collection.parent.path}/{collection.id}" if collection.parent else collection.id


def append(chain: Chain, event: AuditEvent, now: datetime | None = None) -> None:
    """Records `event` durably, then links it (and whatever else is pending) into `chain`."""
    link(chain, until=enqueue(chain, event, now))


def enqueue(chain: Chain, event: AuditEvent, now: datetime | None = None) -> Any:
    """Records `event` durably in the chain's pending list and returns its reference, for the
    sequencer (or the chain's next reader) to link: for writers that must not wait on the chain."""
    batch = chain.db.batch()
    entry = stage(batch, chain, event, now)
    batch.commit()
    return entry


def stage(writer: Any, chain: Chain, event: AuditEvent, now: datetime | None = None) -> Any:
    """Writes `event` to the chain's pending list through `writer` (a transaction or batch)
    and returns its reference.

    The entry commits with the change it records or not at all; link it after the
    commit (`link(chain, until=ref)`). A crash before that leaves it pending, for the
    next reader, writer or daily check.
    """
    at = (now or datetime.now(UTC)).astimezone(UTC)
    ref = pending(chain).document(f"{at:%Y%m%d%H%M%S%f}-{secrets.token_hex(6)}")  # ids sort by time
    content = {
        "action": event.action,
        "actor": {"kind": event.actor.kind, "id": event.actor.id, "role": event.actor.role},
        "client_address": event.client_address,
        "reason": event.reason,
        "details": event.details,
        "at": at,
        ENTRIES_FIELD: _path(chain.entries),
    }
    writer.set(ref, content)
    return ref


def link(chain: Chain, until: Any = None) -> int:
    """Moves pending entries into the chain, oldest first; returns how many this call linked.

    One linker at a time per chain, under a short lock: linkers that all read and then
    write the head deadlock one another under Firestore's pessimistic locking. The
    others wait for their entry (`until`) to be linked, or for the lock. After
    LINK_PATIENCE, an entry stays pending for a later link: it is never lost.
    """
    db = chain.db
    linked, delay, first = 0, 0.005, True
    deadline = time.monotonic() + LINK_PATIENCE.total_seconds()
    while True:
        # (`until` was just written: no need to look for it on the first round.)
        if until is not None and not first and not until.get().exists:
            return linked
        first = False
        lock = _take_lock(db, chain)
        if lock is not None:
            contended, mine = False, False
            try:
                while True:
                    found, done = _link_batch(chain)
                    linked += len(done)
                    mine = mine or (until is not None and until.id in done)
                    if found < LINK_BATCH:
                        break
            except Exception as exc:
                if not clients.transaction_contended(exc):
                    raise
                contended = True
            finally:
                leases.drop(lock)
            if until is None or mine:
                return linked
            if not contended:
                continue
        if time.monotonic() > deadline:
            return linked
        time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
        delay = min(delay * 2, 0.2)


def _take_lock(db: Client, chain: Chain) -> Any | None:
    """The chain's link lock, or None while another linker holds it; a crashed holder's lock expires."""
    ref = db.collection(LINK_LOCKS).document(chain.head.id)
    # `expire_at` is also Firestore's TTL field: a crashed holder's lock goes by itself too.
    return ref if leases.create(db, ref, datetime.now(UTC), LINK_LOCK_LEASE, lease_field="expire_at") else None


def _link_batch(chain: Chain) -> tuple[int, set[str]]:
    """(pending entries found, ids of the pending entries this call linked)."""
    from google.cloud import firestore

    db = chain.db
    # Listed outside the transaction: a query inside would lock the list against new writers.
    waiting = [snap.reference for snap in pending(chain).limit(LINK_BATCH).stream()]
    if not waiting:
        return 0, set()

    @firestore.transactional
    def link_batch(transaction: Any) -> set[str]:
        head = chain.head.get(transaction=transaction)
        still = sorted((s for s in db.get_all(waiting, transaction=transaction) if s.exists), key=lambda s: s.id)
        seq = int(head.get("seq")) if head.exists else 0
        previous = head.get("hash") if head.exists else GENESIS
        for snap in still:
            seq += 1
            content = snap.to_dict() or {}
            content.pop(ENTRIES_FIELD, None)
            body = {**content, "seq": seq, "prev_hash": previous}
            body["hash"] = previous = entry_hash(body)
            entry = {**body, "recorded_at": firestore.SERVER_TIMESTAMP}
            transaction.create(chain.entries.document(entry_id(seq)), entry)
            transaction.delete(snap.reference)
        if still:
            # The head names its entries, so the daily verification finds every kind of chain.
            path = _path(chain.entries)
            transaction.set(
                chain.head, {"seq": seq, "hash": previous, "updated_at": datetime.now(UTC), ENTRIES_FIELD: path}
            )
        return {snap.id for snap in still}

    return len(waiting), link_batch(db.transaction(max_attempts=3))


def append_once(chain: Chain, event: AuditEvent, now: datetime | None = None) -> bool:
    """Enqueues `event` unless an entry with its action and details is already there (or pending).

    For work resumed after a crash, under a lease, so no two callers check at once.
    """
    from google.cloud.firestore import FieldFilter

    for collection in (chain.entries, pending(chain)):
        query = collection.where(filter=FieldFilter("action", "==", event.action))
        for key, value in sorted((event.details or {}).items()):
            query = query.where(filter=FieldFilter(f"details.{key}", "==", value))
        if any(True for _ in query.limit(1).stream()):
            return False
    enqueue(chain, event, now)
    return True


def settle(chain: Chain) -> None:
    """Links anything pending, so a reader sees every entry written before it asked."""
    if any(True for _ in pending(chain).limit(1).stream()):
        link(chain)


def page(db: Client, account_id: str, limit: int, before_seq: int | None = None) -> list[dict[str, Any]]:
    """The account's trail, newest first, starting below `before_seq`."""
    return chain_page(account_chain(db, account_id), limit, before_seq)


def chain_page(chain: Chain, limit: int, before_seq: int | None = None) -> list[dict[str, Any]]:
    """Any chain's entries, newest first, starting below `before_seq`."""
    from google.cloud import firestore

    settle(chain)
    query = chain.entries.order_by("seq", direction=firestore.Query.DESCENDING)
    if before_seq is not None:
        query = query.start_after({"seq": before_seq})
    return [_public(snap) for snap in query.limit(limit).stream()]


def _public(snap: Any) -> dict[str, Any]:
    entry = snap.to_dict() or {}
    entry.pop("recorded_at", None)
    return {"id": snap.id, **entry}


def hashed_form(value: Any) -> Any:
    """An entry (or any part of one) as its hash reads it: each datetime as its canonical text,
    so the JSON of the result hashes as the entry did (what an outside verifier recomputes)."""
    if isinstance(value, datetime):
        return _canonical(value)
    if isinstance(value, dict):
        return {key: hashed_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return [hashed_form(item) for item in value]
    return value


def chain_entries(chain: Chain, up_to_seq: int, page_size: int = 500) -> list[dict[str, Any]]:
    """The chain's entries 1..`up_to_seq`, oldest first, each exactly as hashed (hashed_form,
    without the server's receipt time)."""
    found: list[dict[str, Any]] = []
    query = chain.entries.where(filter=_seq_at_most(up_to_seq)).order_by("seq")
    while True:
        page = list((query.start_after({"seq": found[-1]["seq"]}) if found else query).limit(page_size).stream())
        for snap in page:
            body = snap.to_dict() or {}
            body.pop("recorded_at", None)
            found.append(hashed_form(body))
        if len(page) < page_size:
            return found


def _seq_at_most(seq: int) -> Any:
    from google.cloud.firestore import FieldFilter

    return FieldFilter("seq", "<=", seq)


def heads(db: Client) -> Iterator[tuple[str, int, str]]:
    """(chain id, seq, head hash) of every chain that has entries: what a checkpoint commits to."""
    for snap in db.collection(CHAINS).select(["seq", "hash"]).stream():
        head = snap.to_dict() or {}
        seq, head_hash = head.get("seq"), head.get("hash")
        if isinstance(seq, int) and seq > 0 and isinstance(head_hash, str):
            yield snap.id, seq, head_hash


def entries(db: Client, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest entries first."""
    return page(db, account_id, limit)


@dataclass(frozen=True)
class Verdict:
    account_id: str
    entries: int
    intact: bool
    first_broken_seq: int | None = None
    problem: str | None = None


def verify(db: Client, account_id: str, chain: Chain | None = None) -> Verdict:
    """Walks the chain from its start; reports the first entry that was changed, removed or inserted."""
    chain = chain or account_chain(db, account_id)
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


def chain_of(db: Client, head: Any, entries_path: str | None) -> Chain:
    """The chain a head (or a pending entry) belongs to; account chains before heads named their entries."""
    if entries_path:
        return Chain(db, db.collection(entries_path), head)
    return account_chain(db, head.id)


def link_stragglers(db: Client, limit: int = 2000) -> int:
    """The sequencer: links the pending entries (up to `limit` found) of every chain, those
    staged by writers that do not wait and those a crash or a long queue left; returns how
    many chains had some."""
    chains: dict[str, Chain] = {}
    for snap in db.collection_group(PENDING).limit(limit).stream():
        head = snap.reference.parent.parent
        chains.setdefault(head.path, chain_of(db, head, snap.get(ENTRIES_FIELD)))
    for chain in chains.values():
        link(chain)
    return len(chains)


def verify_recent(db: Client, now: datetime, limit: int = 2000) -> dict[str, Any]:
    """Links stragglers, then verifies every chain written to lately; logs an alert for each broken one."""
    import logging

    from google.cloud import firestore

    from orderpally import structured_logging

    log = structured_logging.get_logger("orderpally.audit")
    link_stragglers(db, limit)
    heads = (
        db.collection(CHAINS)
        .where(filter=firestore.FieldFilter("updated_at", ">=", now - RECENT))
        .limit(limit)
        .stream()
    )
    checked, broken = 0, []
    for head in heads:
        verdict = verify(db, head.id, chain_of(db, head.reference, (head.to_dict() or {}).get(ENTRIES_FIELD)))
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


def entries_between(db: Client, account_id: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """The account's audit trail in [start, end), once every pending entry is linked."""
    from google.cloud.firestore import FieldFilter

    settle(account_chain(db, account_id))
    in_range = (
        trail(db, account_id).where(filter=FieldFilter("at", ">=", start)).where(filter=FieldFilter("at", "<", end))
    )
    for snap in in_range.stream():
        yield snap.to_dict() or {}

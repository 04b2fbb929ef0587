"""The incidents' Firestore: their collections, and every read, write, query and transaction on them.

    incidents/{reference}                         the report and its current state
    incidents/{reference}/history/                its hash-chained history (orderpally.audit)
    incidents/{reference}/breach_recipients/{id}  each account a breach notice went to
    incident_requests/{digest}                    idempotency: one incident per submitted key

The accounts a breach notice names are `orderpally.accounts`'; the deliveries of its mails
are the mail pipeline's (`orderpally.messaging.store`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import audit, leases, outbox, unit_of_work

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction, WriteBatch

    from orderpally.messaging.requests import EmailRequest

INCIDENTS = "incidents"
HISTORY = "history"
REQUESTS = "incident_requests"
BREACH_RECIPIENTS = "breach_recipients"
INTAKE_LEASE_FIELD = "intake_lease_until"
REQUEST_LIFETIME = timedelta(days=2)  # how long a submission's Idempotency-Key is remembered
# Firestore's cap on the writes of one batch or transaction (the emulator does not enforce it).
MAX_BATCH_WRITES = 500


def _ref(db: Client, reference: str) -> DocumentReference:
    return db.collection(INCIDENTS).document(reference)


def chain(db: Client, reference: str) -> audit.Chain:
    """Where the incident's history lives: its entries and the head of its chain."""
    return audit.Chain(
        db,
        _ref(db, reference).collection(HISTORY),
        db.collection(audit.CHAINS).document(f"incident-{reference}"),
    )


def load(db: Client, reference: str) -> dict[str, Any] | None:
    """The incident, None when there is none."""
    snapshot = _ref(db, reference).get()
    return (snapshot.to_dict() or {}) if snapshot.exists else None


def update(db: Client, reference: str, fields: dict[str, Any], writer: WriteBatch | None = None) -> None:
    """Updates fields of the incident, through `writer` (a batch) when given."""
    if writer is None:
        _ref(db, reference).update(fields)
    else:
        writer.update(_ref(db, reference), fields)


def request_seen(db: Client, request_id: str) -> bool:
    """Whether a submission came under this (hashed) Idempotency-Key already."""
    return bool(db.collection(REQUESTS).document(request_id).get().exists)


def create(
    db: Client, reference: str, incident: dict[str, Any], request_id: str | None, fingerprint: str, now: datetime
) -> tuple[str, str] | None:
    """Writes the incident, with its request record when a key came; when the key was seen
    before, writes nothing and returns the earlier submission's (reference, fingerprint)."""
    request_ref = db.collection(REQUESTS).document(request_id) if request_id else None

    def create_once(transaction: Transaction) -> tuple[str, str] | None:
        if request_ref is not None:
            seen = request_ref.get(transaction=transaction)
            if seen.exists:
                return seen.get("reference"), seen.get("fingerprint")
            body = {"reference": reference, "fingerprint": fingerprint, "expire_at": now + REQUEST_LIFETIME}
            transaction.create(request_ref, body)
        transaction.create(_ref(db, reference), incident)
        return None

    return unit_of_work.in_transaction(db, create_once)


def claim_intake(db: Client, reference: str, now: datetime, lease: timedelta) -> dict[str, Any] | None:
    """The incident, if its intake has steps pending and nobody holds its lease; takes the lease."""
    claim = leases.claim(
        db,
        _ref(db, reference),
        now,
        lease,
        finished=lambda entry, exists: None if entry.get("intake_pending") else True,
        lease_field=INTAKE_LEASE_FIELD,
    )
    return claim.entry if claim.taken else None


def release_intake(db: Client, reference: str) -> None:
    leases.release(None, _ref(db, reference), lease_field=INTAKE_LEASE_FIELD)


def unfinished_intakes(db: Client, steps: list[str], now: datetime, limit: int) -> list[str]:
    """References of incidents with any of `steps` pending and no live intake lease."""
    from google.cloud import firestore

    query = db.collection(INCIDENTS).where(filter=firestore.FieldFilter("intake_pending", "array_contains_any", steps))
    return [
        snap.id
        for snap in query.limit(limit).stream()
        if not leases.held(snap.to_dict() or {}, now, INTAKE_LEASE_FIELD)
    ]


def intake_step_done(db: Client, reference: str, step: str) -> None:
    from google.cloud import firestore

    _ref(db, reference).update({"intake_pending": firestore.ArrayRemove([step])})


def add_token_hashes(
    db: Client,
    reference: str,
    status_hash: str | None,
    confirm_hash: str | None,
    writer: WriteBatch | None = None,
    also: dict[str, Any] | None = None,
) -> None:
    """Adds a status (and a confirm) link's hash, keeping the ones already mailed valid; writes
    the fields `also` with them, in one update."""
    from google.cloud import firestore

    change: dict[str, Any] = dict(also or {})
    if status_hash:
        change["status_token_hashes"] = firestore.ArrayUnion([status_hash])
    if confirm_hash:
        change["confirm_token_hashes"] = firestore.ArrayUnion([confirm_hash])
    update(db, reference, change, writer)


def mark_paged(db: Client, reference: str, now: datetime) -> bool:
    """Claims the one page for this incident; False when it was paged already."""
    ref = _ref(db, reference)

    def claim(transaction: Transaction) -> bool:
        if ref.get(transaction=transaction).get("paged_at") is not None:
            return False
        transaction.update(ref, {"paged_at": now})
        return True

    return unit_of_work.in_transaction(db, claim)


def add_attachment(db: Client, reference: str, entry: dict[str, Any], limit: int) -> int | None:
    """Numbers and records an uploaded file; None when the report already has `limit` files."""
    ref = _ref(db, reference)

    # Not a transaction: uploads to one report at once contended until they gave up (a 503).
    def decide(snapshot: Any) -> tuple[int | None, Any]:
        attachments = list((snapshot.to_dict() or {}).get("attachments") or [])
        if len(attachments) >= limit:
            return None, None
        return len(attachments) + 1, lambda batch, unchanged: batch.update(
            ref, {"attachments": [*attachments, entry]}, option=unchanged
        )

    return unit_of_work.if_unchanged(db, ref, decide)


def in_states(db: Client, states: list[str], limit: int) -> list[tuple[str, dict[str, Any]]]:
    from google.cloud import firestore

    query = db.collection(INCIDENTS).where(filter=firestore.FieldFilter("state", "in", states))
    return [(snap.id, snap.to_dict() or {}) for snap in query.limit(limit).stream()]


def newest(db: Client, equal_to: dict[str, str], limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Incidents whose fields equal `equal_to`, newest first: the newest `limit` of them (the
    order is the query's, so the limit keeps the newest; indexes in firestore.tf)."""
    from google.cloud import firestore

    query: Any = db.collection(INCIDENTS)
    for name, value in equal_to.items():
        query = query.where(filter=firestore.FieldFilter(name, "==", value))
    query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
    return [(snap.id, snap.to_dict() or {}) for snap in query.stream()]


def reported_by(db: Client, account_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(reference, incident) of every incident the account reported."""
    from google.cloud import firestore

    query = db.collection(INCIDENTS).where(filter=firestore.FieldFilter("reporter_account_id", "==", account_id))
    for snap in query.stream():
        yield snap.id, snap.to_dict() or {}


def record_note(
    db: Client,
    reference: str,
    event: audit.AuditEvent,
    mail: EmailRequest | None,
    status_hash: str | None,
    change: dict[str, Any],
    now: datetime,
) -> outbox.Staged:
    """Commits the note's history entry, its mail (if any), the mail's status link and `change`
    together; the caller then announces what was staged."""

    def write(batch: WriteBatch) -> outbox.Staged:
        staged = outbox.stage_on(batch, db, chain(db, reference), event, mail, now)
        if status_hash or change:
            add_token_hashes(db, reference, status_hash, None, batch, change)
        return staged

    return unit_of_work.in_batch(db, write)


def record_breach(db: Client, reference: str, recipients: list[tuple[str, EmailRequest | None]], now: datetime) -> None:
    """Records each affected account with its staged notice mail (if it has an address), in
    batches under the write cap, then marks the incident a breach (the flag goes last)."""
    from orderpally.messaging.requests import stage_email

    ref = _ref(db, reference)
    per_batch = MAX_BATCH_WRITES // 2  # the recipient's record and its staged mail
    for start in range(0, len(recipients), per_batch):
        batch = db.batch()
        for account_id, mail in recipients[start : start + per_batch]:
            batch.set(
                ref.collection(BREACH_RECIPIENTS).document(account_id), {"account_id": account_id, "requested_at": now}
            )
            if mail is not None:
                stage_email(batch, db, mail, now)
        batch.commit()
    ref.update({"personal_data_breach": True, "breach_marked_at": now, "updated_at": now})


def breach_recipients(db: Client, reference: str) -> list[tuple[str, dict[str, Any]]]:
    """(account id, record) of each account the incident's breach notice went to."""
    return [(snap.id, snap.to_dict() or {}) for snap in _ref(db, reference).collection(BREACH_RECIPIENTS).stream()]

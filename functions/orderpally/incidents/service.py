"""Security incidents in Firestore: intake, confirmation, reporter view, triage, replies, deadlines.

incidents/{reference}            the report and its current state
incidents/{reference}/history/   append-only, hash-chained (orderpally.audit) record of
                                 everything that happened to it, internal notes included
incident_requests/{digest}       idempotency: one incident per submitted key

Intake writes the incident first, then runs INTAKE_STEPS, marking each done. A crash in
between leaves steps pending: a retry with the same Idempotency-Key, or the deadline
sweep, claims the incident under a lease and finishes them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic

from orderpally import audit, clients, fields, outbox
from orderpally.accounts import Language
from orderpally.config import settings
from orderpally.incidents import rules
from orderpally.messaging.requests import EmailRequest

INCIDENTS = "incidents"
HISTORY = "history"
REQUESTS = "incident_requests"
# After the incident is written: its history's first entry, the acknowledgement mail,
# the customer's own trail, and the on-call page.
INTAKE_STEPS = ("history", "acknowledgement", "customer_trail", "page")
_LABEL = r"^[A-Za-z0-9_-]{1,64}$"


def _plain(value: str) -> str:
    if rules.has_markup(value):
        raise ValueError("write plain text; markup such as <tags> is not accepted")
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in value):
        raise ValueError("contains control characters")
    return value.strip()


class Report(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    category: Literal[rules.CATEGORIES]  # type: ignore[valid-type]
    description: str = pydantic.Field(min_length=10, max_length=5000)
    occurred_at: fields.Moment | None = None
    references: list[pydantic.constr(pattern=_LABEL)] = pydantic.Field(default_factory=list, max_length=20)  # type: ignore[valid-type]
    contact_email: fields.MailAddress | None = None
    language: Language = "zh-TW"

    @pydantic.field_validator("description")
    @classmethod
    def _plain_description(cls, value: str) -> str:
        return _plain(value)


class Triage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    state: Literal[rules.STATES] | None = None  # type: ignore[valid-type]
    severity: Literal[rules.SEVERITIES] | None = None  # type: ignore[valid-type]
    assignee: fields.AccountId | None = None

    @pydantic.model_validator(mode="after")
    def _something(self) -> Triage:
        if self.state is None and self.severity is None and self.assignee is None:
            raise ValueError("set state, severity or assignee")
        return self


class Note(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    text: str = pydantic.Field(min_length=1, max_length=5000)
    visibility: Literal["internal", "public"]

    @pydantic.field_validator("text")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _plain(value)


class BreachNotice(pydantic.BaseModel):
    """Marks the incident a personal-data breach and tells the affected customers."""

    model_config = pydantic.ConfigDict(extra="forbid")

    affected_account_ids: list[pydantic.constr(pattern=_LABEL)] = pydantic.Field(min_length=1, max_length=2000)  # type: ignore[valid-type]
    title_zh_tw: str = pydantic.Field(min_length=1, max_length=200)
    body_zh_tw: str = pydantic.Field(min_length=1, max_length=5000)
    title_en: str = pydantic.Field(min_length=1, max_length=200)
    body_en: str = pydantic.Field(min_length=1, max_length=5000)

    @pydantic.field_validator("title_zh_tw", "body_zh_tw", "title_en", "body_en")
    @classmethod
    def _plain_texts(cls, value: str) -> str:
        return _plain(value)


BREACH_RECIPIENTS = "breach_recipients"


class IncidentError(Exception):
    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug


@dataclass(frozen=True)
class Reporter:
    account_id: str | None
    email: str | None
    address: str | None


@dataclass(frozen=True)
class Submitted:
    reference: str
    status_token: str | None  # None for a duplicate: the first submission's mail has it
    confirm_token: str | None
    duplicate: bool
    incident: dict[str, Any]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def chain(reference: str) -> audit.Chain:
    db = clients.firestore_client()
    return audit.Chain(
        db.collection(INCIDENTS).document(reference).collection(HISTORY),
        db.collection(audit.CHAINS).document(f"incident-{reference}"),
    )


def history(reference: str, event: str, actor: audit.Actor, address: str | None = None, **details: Any) -> None:
    audit.append(chain(reference), audit.AuditEvent(event, actor, address, None, details))


def submit(
    db: Any, report: Report, reporter: Reporter, idempotency_key: str | None, table: dict, now: datetime
) -> Submitted:
    """Records the report once per idempotency key; anonymous reports wait for email confirmation."""
    from google.cloud import firestore

    contact = (reporter.email or report.contact_email or "").lower() or None
    if contact is None:
        raise IncidentError(422, "contact-required", "Give a contact email so we can reply and send your reference.")
    reference = rules.new_reference()
    status_token = secrets.token_urlsafe(32)
    confirm_token = None if reporter.account_id else secrets.token_urlsafe(32)
    severity = rules.provisional_severity(report.category)
    first_due, resolve_due = rules.deadlines(severity, now, table)
    incident = {
        "category": report.category,
        "description": report.description,
        "occurred_at": report.occurred_at,
        "references": report.references,
        "contact_email": contact,
        "language": report.language,
        "reporter_account_id": reporter.account_id,
        "state": "received",
        "severity": severity,
        "severity_provisional": True,
        "confirmed": reporter.account_id is not None,
        "status_token_hashes": [token_hash(status_token)],
        # Lists: a resumed intake mails fresh links without invalidating ones already sent.
        "confirm_token_hashes": [token_hash(confirm_token)] if confirm_token else [],
        "created_at": now,
        "first_response_due": first_due,
        "resolution_due": resolve_due,
        "first_responded_at": None,
        "assignee": None,
        "paged_at": None,
        "updated_at": now,
        "intake_pending": list(INTAKE_STEPS),
        "intake_lease_until": now + _intake_lease(),
    }
    request_ref = _request_ref(db, reporter, idempotency_key) if idempotency_key else None
    fingerprint = hashlib.sha256(report.model_dump_json().encode()).hexdigest()

    @firestore.transactional
    def create(transaction: Any) -> str | None:
        if request_ref is not None:
            seen = request_ref.get(transaction=transaction)
            if seen.exists:
                if seen.get("fingerprint") != fingerprint:
                    raise IncidentError(422, "idempotency-key-reused", "This Idempotency-Key came with another report.")
                return seen.get("reference")
            body = {"reference": reference, "fingerprint": fingerprint, "expire_at": now + timedelta(days=2)}
            transaction.create(request_ref, body)
        transaction.create(db.collection(INCIDENTS).document(reference), incident)
        return None

    earlier = create(db.transaction())
    if earlier:
        existing = db.collection(INCIDENTS).document(earlier).get().to_dict() or {}
        return Submitted(earlier, None, None, True, existing)
    return Submitted(reference, status_token, confirm_token, False, incident)


def _request_ref(db: Any, reporter: Reporter, idempotency_key: str) -> Any:
    scope = reporter.account_id or reporter.address or "anonymous"
    return db.collection(REQUESTS).document(token_hash(f"{scope}\x00{idempotency_key}"))


def is_retry(db: Any, reporter: Reporter, idempotency_key: str | None) -> bool:
    """Whether this reporter already submitted under this key (a retry must not use up their rate)."""
    return bool(idempotency_key) and _request_ref(db, reporter, idempotency_key or "").get().exists


def reporter_actor(incident: dict[str, Any]) -> audit.Actor:
    account_id = incident.get("reporter_account_id")
    return audit.Actor("customer", account_id) if account_id else audit.Actor("anonymous", "reporter")


def _intake_lease() -> timedelta:
    return timedelta(seconds=settings().incident_intake_lease_seconds)


def claim_unfinished_intake(db: Any, reference: str, now: datetime) -> dict[str, Any] | None:
    """The incident, if its intake has steps pending and nobody holds its lease; takes the lease."""
    from google.cloud import firestore

    ref = db.collection(INCIDENTS).document(reference)

    @firestore.transactional
    def claim(transaction: Any) -> dict[str, Any] | None:
        incident = ref.get(transaction=transaction).to_dict() or {}
        lease = incident.get("intake_lease_until")
        if not incident.get("intake_pending") or (lease is not None and lease > now):
            return None
        transaction.update(ref, {"intake_lease_until": now + _intake_lease()})
        return incident

    return claim(db.transaction())


def unfinished_intakes(db: Any, now: datetime, limit: int = 100) -> list[str]:
    """References of incidents whose intake stopped part-way and whose lease has run out."""
    from google.cloud import firestore

    query = db.collection(INCIDENTS).where(
        filter=firestore.FieldFilter("intake_pending", "array_contains_any", list(INTAKE_STEPS))
    )
    return [snap.id for snap in query.limit(limit).stream() if (snap.get("intake_lease_until") or now) <= now]


def intake_step_done(db: Any, reference: str, step: str) -> None:
    from google.cloud import firestore

    db.collection(INCIDENTS).document(reference).update({"intake_pending": firestore.ArrayRemove([step])})


def release_intake(db: Any, reference: str) -> None:
    db.collection(INCIDENTS).document(reference).update({"intake_lease_until": None})


def new_intake_tokens(db: Any, reference: str, incident: dict[str, Any]) -> tuple[str, str | None]:
    """Fresh status and (for an anonymous report) confirm links for a resumed acknowledgement."""
    from google.cloud import firestore

    status_token = secrets.token_urlsafe(32)
    confirm_token = None if incident.get("reporter_account_id") else secrets.token_urlsafe(32)
    change: dict[str, Any] = {"status_token_hashes": firestore.ArrayUnion([token_hash(status_token)])}
    if confirm_token:
        change["confirm_token_hashes"] = firestore.ArrayUnion([token_hash(confirm_token)])
    db.collection(INCIDENTS).document(reference).update(change)
    return status_token, confirm_token


def load(db: Any, reference: str) -> dict[str, Any]:
    if not rules.REFERENCE.fullmatch(reference):
        raise IncidentError(404, "incident-not-found", "No such incident.")
    snapshot = db.collection(INCIDENTS).document(reference).get()
    if not snapshot.exists:
        raise IncidentError(404, "incident-not-found", "No such incident.")
    return snapshot.to_dict()


def reporter_may_read(incident: dict[str, Any], account_id: str | None, token: str | None) -> bool:
    if account_id and incident.get("reporter_account_id") == account_id:
        return True
    return _token_matches(token, incident.get("status_token_hashes"))


def _token_matches(token: str | None, hashes: list[str] | None) -> bool:
    if not token:
        return False
    digest = token_hash(token)
    return any(hmac.compare_digest(known, digest) for known in hashes or [])


def confirm(db: Any, reference: str, token: str, now: datetime) -> tuple[dict[str, Any], bool]:
    """Confirms an anonymous report's email; returns the incident and whether this call confirmed it."""
    incident = load(db, reference)
    if not _token_matches(token, incident.get("confirm_token_hashes")):
        raise IncidentError(404, "incident-not-found", "No such incident.")
    if incident["confirmed"]:
        return incident, False
    db.collection(INCIDENTS).document(reference).update({"confirmed": True, "updated_at": now})
    history(reference, "incident.confirmed", audit.Actor("anonymous", "reporter"))
    return {**incident, "confirmed": True}, True


def mark_paged(db: Any, reference: str, now: datetime) -> bool:
    """Claims the one page for this incident; False when it was paged already."""
    from google.cloud import firestore

    ref = db.collection(INCIDENTS).document(reference)

    @firestore.transactional
    def claim(transaction: Any) -> bool:
        if ref.get(transaction=transaction).get("paged_at") is not None:
            return False
        transaction.update(ref, {"paged_at": now})
        return True

    return claim(db.transaction())


def add_attachment(db: Any, reference: str, entry: dict[str, Any], limit: int) -> int | None:
    """Numbers and records an uploaded file; None when the report already has `limit` files."""
    from google.cloud import firestore

    ref = db.collection(INCIDENTS).document(reference)

    @firestore.transactional
    def add(transaction: Any) -> int | None:
        attachments = list((ref.get(transaction=transaction).to_dict() or {}).get("attachments") or [])
        if len(attachments) >= limit:
            return None
        transaction.update(ref, {"attachments": [*attachments, entry]})
        return len(attachments) + 1

    return add(db.transaction())


def public_replies(reference: str) -> list[dict[str, Any]]:
    entries = audit.chain_page(chain(reference), 500)
    return [
        {"at": e["at"], "text": e["details"].get("text", "")}
        for e in reversed(entries)
        if e["action"] == "incident.reply"
    ]


def triage(db: Any, reference: str, change: Triage, actor: audit.Actor, table: dict, now: datetime) -> dict[str, Any]:
    incident = load(db, reference)
    update: dict[str, Any] = {"updated_at": now}
    if change.state:
        try:
            rules.check_transition(incident["state"], change.state)
        except rules.TransitionError as exc:
            raise IncidentError(409, "incident-transition", str(exc)) from None
        update["state"] = change.state
        if incident["state"] == "received" and change.state != "received":
            update["first_responded_at"] = incident.get("first_responded_at") or now
        if change.state in ("resolved", "not_an_issue"):
            update["resolved_at"] = now
    if change.severity:
        first_due, resolve_due = rules.deadlines(change.severity, incident["created_at"], table)
        update.update(
            severity=change.severity,
            severity_provisional=False,
            first_response_due=first_due,
            resolution_due=resolve_due,
        )
    if change.assignee:
        update["assignee"] = change.assignee
    db.collection(INCIDENTS).document(reference).update(update)
    history(reference, "incident.triaged", actor, **change.model_dump(exclude_none=True))
    return {**incident, **update}


def add_note(
    db: Any,
    reference: str,
    note: Note,
    actor: audit.Actor,
    now: datetime,
    reply: Callable[[dict[str, Any], str], EmailRequest] | None = None,
) -> dict[str, Any]:
    """Records the note in the incident's history; a public one with the reporter's `reply`
    mail (built from the incident and a status token of its own), committed together.
    An internal note mails nobody."""
    from google.cloud import firestore

    incident = load(db, reference)
    if incident["state"] not in rules.OPEN_STATES and note.visibility == "public":
        raise IncidentError(409, "incident-closed", "The incident is closed; reopen it by a new report.")
    event = audit.AuditEvent(
        "incident.reply" if note.visibility == "public" else "incident.note", actor, None, None, {"text": note.text}
    )
    change: dict[str, Any] = {}
    mail = None
    if reply is not None and note.visibility == "public":
        # Each reply mail carries a status link of its own; the first is only in the first mail.
        token = secrets.token_urlsafe(32)
        change["status_token_hashes"] = firestore.ArrayUnion([token_hash(token)])
        mail = reply(incident, token)
    if note.visibility == "public" and incident.get("first_responded_at") is None:
        change.update({"first_responded_at": now, "updated_at": now})
    batch = db.batch()
    staged = outbox.stage_on(batch, db, chain(reference), event, mail, now)
    if change:
        batch.update(db.collection(INCIDENTS).document(reference), change)
    batch.commit()
    outbox.announce(db, staged)
    return incident


def open_incidents(db: Any, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
    from google.cloud import firestore

    query = db.collection(INCIDENTS).where(filter=firestore.FieldFilter("state", "in", list(rules.OPEN_STATES)))
    return [(snap.id, snap.to_dict()) for snap in query.limit(limit).stream()]


# Firestore's cap on the writes of one batch or transaction (the emulator does not enforce it).
MAX_BATCH_WRITES = 500


def mark_breach(db: Any, reference: str, notice: BreachNotice, actor: audit.Actor, now: datetime) -> list[EmailRequest]:
    """Records the breach, each affected account and its staged notice mail; returns the mails to send.

    Written in batches under Firestore's write cap, each account with its mail, so a crash part-way
    loses no mail (the outbox redrive sends what was staged) and a retry writes the same documents
    again. The breach flag goes last: until every account is recorded, no breach is shown as marked.
    """
    from orderpally.messaging.requests import stage_email

    load(db, reference)
    wanted = list(dict.fromkeys(notice.affected_account_ids))
    accounts = [(snap.id, snap.to_dict() or {}) for snap in _existing_accounts(db, wanted)]
    texts = {
        "zh-TW": {"title": notice.title_zh_tw, "body": notice.body_zh_tw},
        "en": {"title": notice.title_en, "body": notice.body_en},
    }
    ref = db.collection(INCIDENTS).document(reference)
    mails = []
    per_batch = MAX_BATCH_WRITES // 2  # the recipient's record and its staged mail
    for start in range(0, len(accounts), per_batch):
        batch = db.batch()
        for account_id, account in accounts[start : start + per_batch]:
            batch.set(
                ref.collection(BREACH_RECIPIENTS).document(account_id), {"account_id": account_id, "requested_at": now}
            )
            if account.get("email"):
                mail = EmailRequest(
                    idempotency_key=breach_key(reference, account_id),
                    template="breach_notice",
                    to_email=account["email"],
                    account_id=account_id,
                    data={"reference": reference, "text": texts},
                )
                stage_email(batch, db, mail, now)
                mails.append(mail)
        batch.commit()
    ref.update({"personal_data_breach": True, "breach_marked_at": now, "updated_at": now})
    history(reference, "incident.breach", actor, affected=len(accounts), unknown=len(wanted) - len(accounts))
    return mails


def _existing_accounts(db: Any, account_ids: list[str]) -> list[Any]:
    """The accounts that exist among `account_ids`, in that order, read in a few round trips."""
    found: dict[str, Any] = {}
    for start in range(0, len(account_ids), MAX_BATCH_WRITES):
        refs = [db.collection("accounts").document(a) for a in account_ids[start : start + MAX_BATCH_WRITES]]
        found.update({snap.id: snap for snap in db.get_all(refs) if snap.exists})
    return [found[a] for a in account_ids if a in found]


def breach_key(reference: str, account_id: str) -> str:
    return f"breach_notice:{reference}:{account_id}"


def breach_proof(db: Any, reference: str, account_id: str) -> dict[str, Any]:
    """The delivery's status and time of the account's notice, kept on its recipient record when
    the account is deleted (the delivery ledger goes with the account; the proof stays)."""
    from orderpally.messaging import delivery

    sent = db.collection(delivery.DELIVERIES).document(delivery.delivery_id(breach_key(reference, account_id))).get()
    record = sent.to_dict() or {}
    return {"status": record.get("status", "queued"), "notified_at": record.get("sent_at")}


def breach_recipients(db: Any, reference: str) -> list[dict[str, Any]]:
    """Each affected account and when its notice was sent (from the delivery ledger, or for a
    deleted account, from the proof kept on its pseudonymised record)."""
    rows = []
    for snap in db.collection(INCIDENTS).document(reference).collection(BREACH_RECIPIENTS).stream():
        entry = snap.to_dict()
        proof = (
            {"status": entry.get("status", "queued"), "notified_at": entry.get("notified_at")}
            if "retained_until" in entry
            else breach_proof(db, reference, snap.id)
        )
        rows.append({"account_id": entry.get("account_id", snap.id), "requested_at": entry["requested_at"], **proof})
    return sorted(rows, key=lambda row: row["account_id"])


def newest(db: Any, equal_to: dict[str, str], limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Incidents whose fields equal `equal_to`, newest first: the newest `limit` of them (the
    order is the query's, so the limit keeps the newest; indexes in firestore.tf)."""
    from google.cloud import firestore

    query: Any = db.collection(INCIDENTS)
    for name, value in equal_to.items():
        query = query.where(filter=firestore.FieldFilter(name, "==", value))
    query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
    return [(snap.id, snap.to_dict() or {}) for snap in query.stream()]

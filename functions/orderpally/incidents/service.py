"""Security incidents: intake, confirmation, reporter view, triage, replies, breaches, files.

The use cases, called alike by the HTTP handlers and the deadline schedule; what they store
and where is `store`'s. An incident's history (`store.chain`) is the append-only,
hash-chained (orderpally.audit) record of everything that happened to it, internal notes
included.

Intake writes the incident first, then runs INTAKE_STEPS, marking each done. A crash in
between leaves steps pending: a retry with the same Idempotency-Key, or the deadline
sweep, claims the incident under a lease and finishes them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic

from orderpally import accounts, audit, fields, outbox, web
from orderpally.accounts import Language
from orderpally.config import settings
from orderpally.incidents import rules, store
from orderpally.lifecycle.rules import PSEUDONYM_PREFIX
from orderpally.messaging.requests import EmailRequest, SendEmail

if TYPE_CHECKING:
    from google.cloud.firestore import Client
    from google.cloud.storage import Bucket

INCIDENTS = store.INCIDENTS  # records' archive still reads the collection by this name
# After the incident is written: its history's first entry, the acknowledgement mail,
# the customer's own trail, and the on-call page.
INTAKE_STEPS = rules.INTAKE_STEPS
_LABEL = r"^[A-Za-z0-9_-]{1,64}$"
Label = Annotated[str, pydantic.StringConstraints(pattern=_LABEL)]


def _not_found() -> web.Problem:
    return web.Problem(404, "incident-not-found", "Not found", "No such incident.")


def _plain(value: str) -> str:
    if rules.has_markup(value):
        raise ValueError("write plain text; markup such as <tags> is not accepted")
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in value):
        raise ValueError("contains control characters")
    return value.strip()


class Report(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    category: rules.Category
    description: str = pydantic.Field(min_length=10, max_length=5000)
    occurred_at: fields.Moment | None = None
    references: list[Label] = pydantic.Field(default_factory=list, max_length=20)
    contact_email: fields.MailAddress | None = None
    language: Language = "zh-TW"

    @pydantic.field_validator("description")
    @classmethod
    def _plain_description(cls, value: str) -> str:
        return _plain(value)


class Triage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    state: rules.State | None = None
    severity: rules.Severity | None = None
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

    affected_account_ids: list[Label] = pydantic.Field(min_length=1, max_length=2000)
    title_zh_tw: str = pydantic.Field(min_length=1, max_length=200)
    body_zh_tw: str = pydantic.Field(min_length=1, max_length=5000)
    title_en: str = pydantic.Field(min_length=1, max_length=200)
    body_en: str = pydantic.Field(min_length=1, max_length=5000)

    @pydantic.field_validator("title_zh_tw", "body_zh_tw", "title_en", "body_en")
    @classmethod
    def _plain_texts(cls, value: str) -> str:
        return _plain(value)


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


@dataclass(frozen=True)
class StaffAccess:
    """Who on the staff reads a report, from where, and why: what every staff read records."""

    actor: audit.Actor
    address: str | None
    reason: str


@dataclass(frozen=True)
class Files:
    """Where reporters' files are kept, and the call options of Storage calls made while a
    client waits (so they give up before the platform does)."""

    bucket: Bucket
    call_options: dict[str, Any]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def chain(db: Client, reference: str) -> audit.Chain:
    return store.chain(db, reference)


def history(
    db: Client, reference: str, event: str, actor: audit.Actor, address: str | None = None, **details: Any
) -> None:
    audit.append(store.chain(db, reference), audit.AuditEvent(event, actor, address, None, details))


def links(reference: str, status_token: str, confirm_token: str | None) -> dict[str, str]:
    """The links a reporter's mail carries: the report's status, and (anonymous) its confirmation."""
    base = f"{settings().public_base_url}/incidents/{reference}"
    return {
        "status_link": f"{base}?token={status_token}",
        "confirm_link": f"{base}/confirm?token={confirm_token}" if confirm_token else "",
    }


def submit(
    db: Client, report: Report, reporter: Reporter, idempotency_key: str | None, table: dict, now: datetime
) -> Submitted:
    """Records the report once per idempotency key; anonymous reports wait for email confirmation."""
    contact = (reporter.email or report.contact_email or "").lower() or None
    if contact is None:
        raise web.Problem(
            422, "contact-required", "Invalid report", "Give a contact email so we can reply and send your reference."
        )
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
        "intake_pending": rules.intake_steps(
            report.category, reporter.account_id is not None, reporter.account_id is not None
        ),
        store.INTAKE_LEASE_FIELD: now + _intake_lease(),
    }
    request_id = _request_id(reporter, idempotency_key) if idempotency_key else None
    fingerprint = hashlib.sha256(report.model_dump_json().encode()).hexdigest()
    earlier = store.create(db, reference, incident, request_id, fingerprint, now)
    if earlier is None:
        return Submitted(reference, status_token, confirm_token, False, incident)
    earlier_reference, earlier_fingerprint = earlier
    if earlier_fingerprint != fingerprint:
        raise web.Problem(
            422, "idempotency-key-reused", "Invalid report", "This Idempotency-Key came with another report."
        )
    return Submitted(earlier_reference, None, None, True, store.load(db, earlier_reference) or {})


def _request_id(reporter: Reporter, idempotency_key: str) -> str:
    scope = reporter.account_id or reporter.address or "anonymous"
    return token_hash(f"{scope}\x00{idempotency_key}")


def is_retry(db: Client, reporter: Reporter, idempotency_key: str | None) -> bool:
    """Whether this reporter already submitted under this key (a retry must not use up their rate)."""
    return bool(idempotency_key) and store.request_seen(db, _request_id(reporter, idempotency_key or ""))


def reporter_actor(incident: dict[str, Any]) -> audit.Actor:
    account_id = incident.get("reporter_account_id")
    return audit.Actor("customer", account_id) if account_id else audit.Actor("anonymous", "reporter")


def _intake_lease() -> timedelta:
    return timedelta(seconds=settings().incident_intake_lease_seconds)


def claim_unfinished_intake(db: Client, reference: str, now: datetime) -> dict[str, Any] | None:
    """The incident, if its intake has steps pending and nobody holds its lease; takes the lease."""
    return store.claim_intake(db, reference, now, _intake_lease())


def unfinished_intakes(db: Client, now: datetime, limit: int = 100) -> list[str]:
    """References of incidents whose intake stopped part-way and whose lease has run out."""
    return store.unfinished_intakes(db, list(INTAKE_STEPS), now, limit)


def intake_step_done(db: Client, reference: str, step: str) -> None:
    store.intake_step_done(db, reference, step)


def release_intake(db: Client, reference: str) -> None:
    store.release_intake(db, reference)


def new_intake_tokens(db: Client, reference: str, incident: dict[str, Any]) -> tuple[str, str | None]:
    """Fresh status and (for an anonymous report) confirm links for a resumed acknowledgement."""
    status_token = secrets.token_urlsafe(32)
    confirm_token = None if incident.get("reporter_account_id") else secrets.token_urlsafe(32)
    store.add_token_hashes(
        db, reference, token_hash(status_token), token_hash(confirm_token) if confirm_token else None
    )
    return status_token, confirm_token


def load(db: Client, reference: str) -> dict[str, Any]:
    incident = store.load(db, reference) if rules.REFERENCE.fullmatch(reference) else None
    if incident is None:
        raise _not_found()
    return incident


def reporter_may_read(incident: dict[str, Any], account_id: str | None, token: str | None) -> bool:
    if account_id and incident.get("reporter_account_id") == account_id:
        return True
    return _token_matches(token, incident.get("status_token_hashes"))


def reporters_incident(db: Client, reference: str, account_id: str | None, token: str | None) -> dict[str, Any]:
    """The incident, for its reporter (signed in as `account_id`, or holding the link's token)."""
    incident = load(db, reference)
    # Someone else's report is indistinguishable from none.
    if not reporter_may_read(incident, account_id, token):
        raise _not_found()
    return incident


def _token_matches(token: str | None, hashes: list[str] | None) -> bool:
    if not token:
        return False
    digest = token_hash(token)
    return any(hmac.compare_digest(known, digest) for known in hashes or [])


def confirm(db: Client, reference: str, token: str, now: datetime) -> tuple[dict[str, Any], bool]:
    """Confirms an anonymous report's email; returns the incident and whether this call confirmed it."""
    incident = load(db, reference)
    if not _token_matches(token, incident.get("confirm_token_hashes")):
        raise _not_found()
    if incident["confirmed"]:
        return incident, False
    store.update(db, reference, {"confirmed": True, "updated_at": now})
    history(db, reference, "incident.confirmed", audit.Actor("anonymous", "reporter"))
    return {**incident, "confirmed": True}, True


def mark_paged(db: Client, reference: str, now: datetime) -> bool:
    """Claims the one page for this incident; False when it was paged already."""
    return store.mark_paged(db, reference, now)


def add_attachment(db: Client, reference: str, entry: dict[str, Any], limit: int) -> int | None:
    """Numbers and records an uploaded file; None when the report already has `limit` files."""
    return store.add_attachment(db, reference, entry, limit)


def attach_file(
    db: Client,
    files: Files,
    reference: str,
    incident: dict[str, Any],
    actor: audit.Actor,
    content_type: str,
    payload: bytes,
) -> tuple[int, str]:
    """Stores the reporter's file and records it on the incident; returns its number and SHA-256."""
    if not payload or not rules.attachment_matches(content_type, payload):
        raise web.Problem(422, "attachment-content", "File does not match its type", f"The file is not {content_type}.")
    too_many = web.Problem(
        409, "too-many-attachments", "Too many files", f"At most {rules.MAX_ATTACHMENTS} files per report."
    )
    if len(incident.get("attachments") or []) >= rules.MAX_ATTACHMENTS:
        raise too_many
    digest = hashlib.sha256(payload).hexdigest()
    owner_prefix = incident.get("reporter_account_id") or "anonymous"
    extension = rules.ATTACHMENT_TYPES[content_type]
    # Named by content and chance, not by number: concurrent uploads must not overwrite each other.
    name = f"{owner_prefix}/incidents/{reference}/{digest[:16]}-{secrets.token_hex(4)}.{extension}"
    blob = files.bucket.blob(name)
    blob.upload_from_string(payload, content_type="application/octet-stream", **files.call_options)
    entry = {"object": name, "declared_type": content_type, "size": len(payload), "sha256": digest}
    try:
        number = store.add_attachment(db, reference, entry, rules.MAX_ATTACHMENTS)
    except Exception:
        blob.delete(**files.call_options)
        raise
    if number is None:
        blob.delete(**files.call_options)
        raise too_many
    history(db, reference, "incident.attachment", actor, number=number, sha256=digest, size=len(payload))
    return number, digest


def open_attachment(db: Client, files: Files, reference: str, number: str, staff: StaffAccess) -> tuple[bytes, str]:
    """The file's bytes and the name to save it as, for staff; the read is recorded first."""
    incident = load(db, reference)
    attachments = incident.get("attachments") or []
    if not number.isdigit() or not 1 <= int(number) <= len(attachments):
        raise web.Problem(404, "attachment-not-found", "Not found", "No such attachment.")
    entry = attachments[int(number) - 1]
    if not entry.get("object"):
        # Deleted with the reporter's account; the retained record keeps only its size and digest.
        raise web.Problem(410, "attachment-deleted", "Deleted", "The file was deleted with the reporter's account.")
    # On the record, in the incident's history and the reporter's trail, before the file leaves.
    history(
        db, reference, "staff.attachment_opened", staff.actor, staff.address, number=int(number), reason=staff.reason
    )
    reporter_sees(db, incident, reference, staff, f"attachment {int(number)}")
    payload = files.bucket.blob(entry["object"]).download_as_bytes(**files.call_options)
    return payload, f"{reference}-{number}.{entry['object'].rsplit('.', 1)[-1]}"


def reporter_sees(db: Client, incident: dict[str, Any], reference: str, staff: StaffAccess, what: str) -> None:
    """A staff read of a report reaches its signed-in reporter's own trail, with the reason."""
    reporter = incident.get("reporter_account_id") or ""
    # A retained report names a pseudonym: nobody's trail, and none to start.
    if reporter and not reporter.startswith(PSEUDONYM_PREFIX):
        audit.record(
            db,
            reporter,
            audit.AuditEvent(
                "staff.read", staff.actor, staff.address, staff.reason, {"reference": reference, "what": what}
            ),
        )


def open_for_staff(db: Client, reference: str, staff: StaffAccess) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The incident and its history, newest last; every open is on the record before the data leaves."""
    incident = load(db, reference)
    history(db, reference, "staff.opened", staff.actor, staff.address, reason=staff.reason)
    reporter_sees(db, incident, reference, staff, "incident")
    return incident, list(reversed(audit.chain_page(store.chain(db, reference), 500)))


def public_replies(db: Client, reference: str) -> list[dict[str, Any]]:
    entries = audit.chain_page(store.chain(db, reference), 500)
    return [
        {"at": e["at"], "text": e["details"].get("text", "")}
        for e in reversed(entries)
        if e["action"] == "incident.reply"
    ]


def triage(
    db: Client, reference: str, change: Triage, actor: audit.Actor, table: dict, now: datetime
) -> dict[str, Any]:
    incident = load(db, reference)
    update: dict[str, Any] = {"updated_at": now}
    if change.state:
        rules.check_transition(incident["state"], change.state)
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
    store.update(db, reference, update)
    history(db, reference, "incident.triaged", actor, **change.model_dump(exclude_none=True))
    return {**incident, **update}


def _reply_mail(reference: str, incident: dict[str, Any], text: str, status_token: str, now: datetime) -> EmailRequest:
    return EmailRequest(
        idempotency_key=f"incident_reply:{reference}:{now.isoformat()}",
        template="incident_reply",
        to_email=incident["contact_email"],
        account_id=incident.get("reporter_account_id"),
        language=incident.get("language"),
        data={"reference": reference, "text": text, "status_link": links(reference, status_token, None)["status_link"]},
    )


def add_note(
    db: Client,
    reference: str,
    note: Note,
    actor: audit.Actor,
    now: datetime,
    mail_reporter: SendEmail | None = None,
) -> dict[str, Any]:
    """Records the note in the incident's history; a public one, given `mail_reporter`, with the
    reporter's reply mail (carrying a status link of its own, sent through it), committed
    together. An internal note mails nobody."""
    incident = load(db, reference)
    if incident["state"] not in rules.OPEN_STATES and note.visibility == "public":
        raise web.Problem(
            409, "incident-closed", "Not possible now", "The incident is closed; reopen it by a new report."
        )
    event = audit.AuditEvent(
        "incident.reply" if note.visibility == "public" else "incident.note", actor, None, None, {"text": note.text}
    )
    status_hash = None
    mail = None
    if mail_reporter is not None and note.visibility == "public":
        # Each reply mail carries a status link of its own; the first is only in the first mail.
        token = secrets.token_urlsafe(32)
        status_hash = token_hash(token)
        mail = _reply_mail(reference, incident, note.text, token, now)
    change: dict[str, Any] = {}
    if note.visibility == "public" and incident.get("first_responded_at") is None:
        change.update({"first_responded_at": now, "updated_at": now})
    staged = store.record_note(db, reference, event, mail, status_hash, change, now)
    outbox.announce(db, staged, mail_reporter)
    return incident


def open_incidents(db: Client, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
    return store.in_states(db, list(rules.OPEN_STATES), limit)


def mark_breach(
    db: Client, reference: str, notice: BreachNotice, actor: audit.Actor, now: datetime
) -> list[EmailRequest]:
    """Records the breach, each affected account and its staged notice mail; returns the mails to send.

    Written in batches under Firestore's write cap, each account with its mail, so a crash part-way
    loses no mail (the outbox redrive sends what was staged) and a retry writes the same documents
    again. The breach flag goes last: until every account is recorded, no breach is shown as marked.
    """
    load(db, reference)
    wanted = list(dict.fromkeys(notice.affected_account_ids))
    found = accounts.existing(db, wanted, store.MAX_BATCH_WRITES)
    texts = {
        "zh-TW": {"title": notice.title_zh_tw, "body": notice.body_zh_tw},
        "en": {"title": notice.title_en, "body": notice.body_en},
    }
    recipients = [
        (
            account_id,
            EmailRequest(
                idempotency_key=breach_key(reference, account_id),
                template="breach_notice",
                to_email=account["email"],
                account_id=account_id,
                data={"reference": reference, "text": texts},
            )
            if account.get("email")
            else None,
        )
        for account_id, account in found
    ]
    store.record_breach(db, reference, recipients, now)
    history(db, reference, "incident.breach", actor, affected=len(found), unknown=len(wanted) - len(found))
    return [mail for _, mail in recipients if mail is not None]


def breach_key(reference: str, account_id: str) -> str:
    return f"breach_notice:{reference}:{account_id}"


def breach_proof(db: Client, reference: str, account_id: str) -> dict[str, Any]:
    """The delivery's status and time of the account's notice, kept on its recipient record when
    the account is deleted (the delivery ledger goes with the account; the proof stays)."""
    from orderpally.messaging import delivery

    record = delivery.record_of(db, breach_key(reference, account_id))
    return {"status": record.get("status", "queued"), "notified_at": record.get("sent_at")}


def breach_recipients(db: Client, reference: str) -> list[dict[str, Any]]:
    """Each affected account and when its notice was sent (from the delivery ledger, or for a
    deleted account, from the proof kept on its pseudonymised record)."""
    rows = []
    for account_id, entry in store.breach_recipients(db, reference):
        proof = (
            {"status": entry.get("status", "queued"), "notified_at": entry.get("notified_at")}
            if "retained_until" in entry
            else breach_proof(db, reference, account_id)
        )
        rows.append({"account_id": entry.get("account_id", account_id), "requested_at": entry["requested_at"], **proof})
    return sorted(rows, key=lambda row: row["account_id"])


def breach_status(db: Client, reference: str, staff: StaffAccess | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The incident and its breach notice's recipients; a staff read of its own (`staff`) is
    recorded first (right after marking the breach, the marking was the access)."""
    if staff is not None:
        history(db, reference, "staff.breach_status_read", staff.actor, staff.address, reason=staff.reason)
    incident = load(db, reference)
    return incident, breach_recipients(db, reference)


def newest(db: Client, equal_to: dict[str, str], limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Incidents whose fields equal `equal_to`, newest first: the newest `limit` of them."""
    return store.newest(db, equal_to, limit)


def reported_by(db: Client, account_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(reference, incident) of every incident the account reported (for its records archive)."""
    return store.reported_by(db, account_id)

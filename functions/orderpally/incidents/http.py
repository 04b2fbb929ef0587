"""HTTP routes of security incidents: intake and the reporter's view, staff triage, security.txt."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import flask
import pydantic

from orderpally import accounts, audit, clients, events, web
from orderpally.access import guard as access
from orderpally.access import limiter
from orderpally.access.principal import Principal
from orderpally.config import settings
from orderpally.incidents import intake, rules, service
from orderpally.lifecycle.rules import PSEUDONYM_PREFIX
from orderpally.messaging.requests import EmailRequest, send_staged

ANONYMOUS_PER_ADDRESS = limiter.Limit("incident-address", 5, timedelta(hours=1))
CUSTOMER_PER_ACCOUNT = limiter.Limit("incident-account", 20, timedelta(hours=1))
STAFF_LIST_LIMIT = 200
SECURITY_TXT_LIFETIME = timedelta(days=180)  # RFC 9116: Expires less than a year ahead


class TokenQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    token: str | None = pydantic.Field(default=None, min_length=20, max_length=200)


class ListQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    state: Literal[rules.STATES] | None = None  # type: ignore[valid-type]
    severity: Literal[rules.SEVERITIES] | None = None  # type: ignore[valid-type]
    category: Literal[rules.CATEGORIES] | None = None  # type: ignore[valid-type]


def _table() -> dict:
    return rules.parse_deadlines(settings().incident_deadlines)


def _problem(exc: service.IncidentError) -> web.Problem:
    titles = {404: "Not found", 409: "Not possible now", 422: "Invalid report"}
    return web.Problem(exc.status, exc.slug, titles.get(exc.status, "Refused"), str(exc))


def _load(db: Any, reference: str) -> dict[str, Any]:
    try:
        return service.load(db, reference)
    except service.IncidentError as exc:
        raise _problem(exc) from None


def submit(request: flask.Request) -> flask.Response:
    principal = access.authenticate(request)
    if principal is not None and principal.kind != "customer":
        raise access.forbidden("Report as a signed-in customer or anonymously.")
    report = web.parse_json(request, service.Report)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 8 <= len(key) <= 200:
        raise web.Problem(
            422, "validation-error", "Invalid request", "Idempotency-Key: 8 to 200 characters.", field="Idempotency-Key"
        )
    db = clients.firestore_client()
    now = datetime.now(UTC)
    address = access.client_address(request)
    email = None
    if principal:
        email = accounts.email_of(db, principal.account_id)
    reporter = service.Reporter(principal.account_id if principal else None, email, address)
    if not service.is_retry(db, reporter, key):
        try:
            if principal:
                limiter.hit(db, CUSTOMER_PER_ACCOUNT, principal.account_id, now)
            else:
                limiter.hit(db, ANONYMOUS_PER_ADDRESS, address or "unknown", now)
        except limiter.Limited as exc:
            raise access.too_many(exc) from None
    try:
        done = service.submit(db, report, reporter, key, _table(), now)
    except service.IncidentError as exc:
        raise _problem(exc) from None
    # The report is stored: an outage in the steps after it leaves them to a retry or the
    # deadline sweep, and the reporter still gets the reference.
    with events.left_for_later("incident intake steps"):
        if done.duplicate:
            intake.resume_intake(done.reference, address, now)
        else:
            intake.finish_intake(
                done.reference, done.incident, (done.status_token or "", done.confirm_token), address, now
            )
    body = {
        "reference": done.reference,
        "state": done.incident["state"],
        "confirmation_required": not done.incident["confirmed"],
        "duplicate": done.duplicate,
    }
    return web.json_response(body, 200 if done.duplicate else 201)


def _reporters_incident(request: flask.Request, reference: str) -> tuple[dict[str, Any], str | None]:
    """The incident, for its reporter (their session, or the secret link's token); else 404."""
    principal = access.authenticate(request)
    query = web.validate(request.args.to_dict(), TokenQuery)
    incident = _load(clients.firestore_client(), reference)
    owner = principal.account_id if principal and principal.kind == "customer" else None
    # Someone else's report is indistinguishable from none.
    if not service.reporter_may_read(incident, owner, query.token):
        raise web.Problem(404, "incident-not-found", "Not found", "No such incident.")
    return incident, owner


def add_attachment(request: flask.Request, reference: str) -> flask.Response:
    """The reporter adds a file (PNG, JPEG, PDF or plain text, 5 MB at most, 5 per incident)."""
    import hashlib

    incident, owner = _reporters_incident(request, reference)
    db = clients.firestore_client()
    content_type = request.mimetype
    if content_type not in rules.ATTACHMENT_TYPES:
        raise web.Problem(415, "attachment-type", "Unsupported file type", "Send PNG, JPEG, PDF or plain text.")
    if (request.content_length or 0) > rules.MAX_ATTACHMENT_BYTES:
        raise web.Problem(413, "attachment-too-large", "File too large", "Files may be at most 5 MB.")
    payload = request.stream.read(rules.MAX_ATTACHMENT_BYTES + 1)
    if len(payload) > rules.MAX_ATTACHMENT_BYTES:
        raise web.Problem(413, "attachment-too-large", "File too large", "Files may be at most 5 MB.")
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
    blob = clients.storage_client().bucket(settings().attachments_bucket).blob(name)
    blob.upload_from_string(payload, content_type="application/octet-stream", **clients.while_a_client_waits())
    entry = {"object": name, "declared_type": content_type, "size": len(payload), "sha256": digest}
    try:
        number = service.add_attachment(db, reference, entry, rules.MAX_ATTACHMENTS)
    except Exception:
        blob.delete(**clients.while_a_client_waits())
        raise
    if number is None:
        blob.delete(**clients.while_a_client_waits())
        raise too_many
    service.history(
        reference,
        "incident.attachment",
        audit.Actor("customer", owner) if owner else audit.Actor("anonymous", "reporter"),
        number=number,
        sha256=digest,
        size=len(payload),
    )
    return web.json_response({"number": number, "size": len(payload), "sha256": digest}, 201)


def staff_attachment(request: flask.Request, reference: str, number: str) -> flask.Response:
    """Served to staff only, and never as something a browser would run or render."""
    principal, reason = access.require_staff_read(request, "security")
    db = clients.firestore_client()
    incident = _load(db, reference)
    attachments = incident.get("attachments") or []
    if not number.isdigit() or not 1 <= int(number) <= len(attachments):
        raise web.Problem(404, "attachment-not-found", "Not found", "No such attachment.")
    entry = attachments[int(number) - 1]
    if not entry.get("object"):
        # Deleted with the reporter's account; the retained record keeps only its size and digest.
        raise web.Problem(410, "attachment-deleted", "Deleted", "The file was deleted with the reporter's account.")
    actor = _staff_actor(principal)
    # On the record, in the incident's history and the reporter's trail, before the file leaves.
    service.history(
        reference, "staff.attachment_opened", actor, access.client_address(request), number=int(number), reason=reason
    )
    _reporter_sees(incident, reference, actor, request, reason, f"attachment {int(number)}")
    payload = (
        clients.storage_client()
        .bucket(settings().attachments_bucket)
        .blob(entry["object"])
        .download_as_bytes(**clients.while_a_client_waits())
    )
    response = flask.Response(payload, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{reference}-{number}.{entry["object"].rsplit(".", 1)[-1]}"'
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "no-store"
    return response


def _reporter_view(reference: str, incident: dict[str, Any]) -> dict[str, Any]:
    return {
        "reference": reference,
        "category": incident["category"],
        "state": incident["state"],
        "confirmed": incident["confirmed"],
        "received_at": incident["created_at"].isoformat(),
        "replies": [{"at": r["at"].isoformat(), "text": r["text"]} for r in service.public_replies(reference)],
    }


def reporter_status(request: flask.Request, reference: str) -> flask.Response:
    incident, _ = _reporters_incident(request, reference)
    return web.json_response(_reporter_view(reference, incident))


def confirm(request: flask.Request, reference: str) -> flask.Response:
    query = web.validate(request.args.to_dict(), TokenQuery)
    if not query.token:
        raise web.Problem(404, "incident-not-found", "Not found", "No such incident.")
    now = datetime.now(UTC)
    try:
        incident, _ = service.confirm(clients.firestore_client(), reference, query.token, now)
    except service.IncidentError as exc:
        raise _problem(exc) from None
    intake.page_on_call(reference, incident, now)
    return web.json_response({"reference": reference, "confirmed": True})


def _staff_actor(principal: Principal) -> audit.Actor:
    return audit.Actor("staff", principal.account_id, ",".join(sorted(principal.roles)))


def _summary(reference: str, incident: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "category",
        "state",
        "severity",
        "severity_provisional",
        "confirmed",
        "assignee",
        "created_at",
        "first_response_due",
        "resolution_due",
        "first_responded_at",
    )
    return {
        "reference": reference,
        **{k: (v.isoformat() if isinstance(v, datetime) else v) for k in keys for v in [incident.get(k)]},
    }


def _reporter_sees(
    incident: dict[str, Any], reference: str, actor: audit.Actor, request: flask.Request, reason: str, what: str
) -> None:
    """A staff read of a report reaches its signed-in reporter's own trail, with the reason."""
    reporter = incident.get("reporter_account_id") or ""
    # A retained report names a pseudonym: nobody's trail, and none to start.
    if reporter and not reporter.startswith(PSEUDONYM_PREFIX):
        audit.record(
            reporter,
            audit.AuditEvent(
                "staff.read", actor, access.client_address(request), reason, {"reference": reference, "what": what}
            ),
        )


def staff_list(request: flask.Request) -> flask.Response:
    # Summaries name no reporter; the reason and the token are still asked, as for every staff read.
    access.require_staff_read(request, "security")
    query = web.validate({k: v for k, v in request.args.items() if k != access.STAFF_REASON}, ListQuery)
    wanted = {name: getattr(query, name) for name in ("state", "severity", "category") if getattr(query, name)}
    found = service.newest(clients.firestore_client(), wanted, STAFF_LIST_LIMIT)
    return web.json_response({"incidents": [_summary(reference, incident) for reference, incident in found]})


def staff_open(request: flask.Request, reference: str) -> flask.Response:
    principal, reason = access.require_staff_read(request, "security")
    db = clients.firestore_client()
    incident = _load(db, reference)
    actor = _staff_actor(principal)
    # Every open is a staff access to someone's report: on the record before the data leaves.
    service.history(reference, "staff.opened", actor, access.client_address(request), reason=reason)
    _reporter_sees(incident, reference, actor, request, reason, "incident")
    entries = audit.chain_page(service.chain(reference), 500)
    body = {
        **_summary(reference, incident),
        "description": incident["description"],
        "occurred_at": incident["occurred_at"].isoformat() if incident.get("occurred_at") else None,
        "references": incident["references"],
        "contact_email": incident["contact_email"],
        "reporter_account_id": incident.get("reporter_account_id"),
        "history": [
            {
                "seq": e["seq"],
                "action": e["action"],
                "actor": e["actor"],
                "at": e["at"].isoformat(),
                "details": e["details"],
            }
            for e in reversed(entries)
        ],
    }
    return web.json_response(body)


def staff_triage(request: flask.Request, reference: str) -> flask.Response:
    principal = access.require_staff(request, "security")
    change = web.parse_json(request, service.Triage)
    try:
        incident = service.triage(
            clients.firestore_client(), reference, change, _staff_actor(principal), _table(), datetime.now(UTC)
        )
    except service.IncidentError as exc:
        raise _problem(exc) from None
    return web.json_response(_summary(reference, incident))


def staff_note(request: flask.Request, reference: str) -> flask.Response:
    principal = access.require_staff(request, "security")
    note = web.parse_json(request, service.Note)
    now = datetime.now(UTC)
    db = clients.firestore_client()

    def reply(incident: dict[str, Any], status_token: str) -> EmailRequest:
        status_link = intake.links(reference, status_token, None)["status_link"]
        return EmailRequest(
            idempotency_key=f"incident_reply:{reference}:{now.isoformat()}",
            template="incident_reply",
            to_email=incident["contact_email"],
            account_id=incident.get("reporter_account_id"),
            language=incident.get("language"),
            data={"reference": reference, "text": note.text, "status_link": status_link},
        )

    try:
        service.add_note(db, reference, note, _staff_actor(principal), now, reply)
    except service.IncidentError as exc:
        raise _problem(exc) from None
    return flask.Response(status=204)


def staff_mark_breach(request: flask.Request, reference: str) -> flask.Response:
    """A personal-data breach: the affected customers are told in their language, each once."""
    principal = access.require_staff(request, "security")
    notice = web.parse_json(request, service.BreachNotice)
    db = clients.firestore_client()
    try:
        mails = service.mark_breach(db, reference, notice, _staff_actor(principal), datetime.now(UTC))
    except service.IncidentError as exc:
        raise _problem(exc) from None
    with events.left_for_later("breach notice emails"):
        for mail in mails:
            send_staged(db, mail)
    return staff_breach_status(request, reference, status=202)


def staff_breach_status(request: flask.Request, reference: str, status: int = 200) -> flask.Response:
    if status == 200:  # a read of its own; after marking the breach, the marking was the access
        principal, reason = access.require_staff_read(request, "security")
        service.history(
            reference,
            "staff.breach_status_read",
            _staff_actor(principal),
            access.client_address(request),
            reason=reason,
        )
    db = clients.firestore_client()
    incident = _load(db, reference)
    rows = [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        for row in service.breach_recipients(db, reference)
    ]
    return web.json_response(
        {
            "reference": reference,
            "personal_data_breach": bool(incident.get("personal_data_breach")),
            "recipients": rows,
        },
        status,
    )


def security_txt(request: flask.Request) -> flask.Response:
    cfg = settings()
    expires = (datetime.now(UTC) + SECURITY_TXT_LIFETIME).replace(microsecond=0)
    body = "\n".join(
        [
            f"Contact: {cfg.public_base_url}/incidents",
            f"Contact: mailto:{cfg.security_contact_email}",
            f"Expires: {expires.isoformat().replace('+00:00', 'Z')}",
            "Preferred-Languages: zh-TW, en",
            f"Policy: {cfg.public_base_url}/incidents/policy",
            f"Canonical: {cfg.public_base_url}/.well-known/security.txt",
            "",
        ]
    )
    response = flask.Response(body, mimetype="text/plain")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


POLICY = """OrderPally security reporting policy / OrderPally 資安通報政策

Report suspected account compromise, data leaks, vulnerabilities, phishing or
impersonation and abuse of live streams with POST /incidents (JSON; see the
API contract), anonymously or signed in. You get a reference number at once
and replies by email. Please do not access other people's data, degrade the
service or publish details before we have fixed the issue. We do not take
legal action against good-faith research that follows this policy.

請以 POST /incidents 通報疑似帳號遭盜用、資料外洩、安全漏洞、釣魚或冒名、直播濫用等情事，
可具名或匿名。您將立即取得案件編號，並以電子郵件收到回覆。
"""


def policy(request: flask.Request) -> flask.Response:
    response = flask.Response(POLICY, mimetype="text/plain")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/incidents", ("POST",), submit),
    web.Route("/incidents/policy", ("GET",), policy),
    web.Route("/incidents/<reference>", ("GET",), reporter_status),
    web.Route("/incidents/<reference>/confirm", ("GET",), confirm),
    web.Route("/incidents/<reference>/attachments", ("POST",), add_attachment),
    web.Route("/staff/incidents/<reference>/attachments/<number>", ("GET",), staff_attachment),
    web.Route("/staff/incidents", ("GET",), staff_list),
    web.Route("/staff/incidents/<reference>", ("GET",), staff_open),
    web.Route("/staff/incidents/<reference>", ("PATCH",), staff_triage),
    web.Route("/staff/incidents/<reference>/notes", ("POST",), staff_note),
    web.Route("/staff/incidents/<reference>/breach", ("POST",), staff_mark_breach),
    web.Route("/staff/incidents/<reference>/breach", ("GET",), staff_breach_status),
    web.Route("/.well-known/security.txt", ("GET",), security_txt),
)

"""HTTP routes of security incidents: intake and the reporter's view, staff triage, security.txt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import pydantic

from orderpally import audit, clients, events, web
from orderpally.access import guard as access
from orderpally.access.principal import Principal
from orderpally.config import settings
from orderpally.incidents import intake, rules, service
from orderpally.messaging.requests import SendEmail, send_staged, sender

ANONYMOUS_PER_ADDRESS = intake.ANONYMOUS_PER_ADDRESS  # the gateway's tests read the limit here
STAFF_LIST_LIMIT = 200
SECURITY_TXT_LIFETIME = timedelta(days=180)  # RFC 9116: Expires less than a year ahead


class TokenQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    token: str | None = pydantic.Field(default=None, min_length=20, max_length=200)


class ListQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    state: rules.State | None = None
    severity: rules.Severity | None = None
    category: rules.Category | None = None


def _files() -> service.Files:
    bucket = clients.storage_client().bucket(settings().attachments_bucket)
    return service.Files(bucket, clients.while_a_client_waits())


def _send_email() -> SendEmail:
    return sender(events.Publisher(clients.publisher))


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
    done = intake.receive(
        clients.firestore_client(),
        _send_email(),
        report,
        principal.account_id if principal else None,
        access.client_address(request),
        key,
        datetime.now(UTC),
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
    owner = principal.account_id if principal and principal.kind == "customer" else None
    return service.reporters_incident(clients.firestore_client(), reference, owner, query.token), owner


def add_attachment(request: flask.Request, reference: str) -> flask.Response:
    """The reporter adds a file (PNG, JPEG, PDF or plain text, 5 MB at most, 5 per incident)."""
    incident, owner = _reporters_incident(request, reference)
    content_type = request.mimetype
    if content_type not in rules.ATTACHMENT_TYPES:
        raise web.Problem(415, "attachment-type", "Unsupported file type", "Send PNG, JPEG, PDF or plain text.")
    if (request.content_length or 0) > rules.MAX_ATTACHMENT_BYTES:
        raise web.Problem(413, "attachment-too-large", "File too large", "Files may be at most 5 MB.")
    payload = request.stream.read(rules.MAX_ATTACHMENT_BYTES + 1)
    if len(payload) > rules.MAX_ATTACHMENT_BYTES:
        raise web.Problem(413, "attachment-too-large", "File too large", "Files may be at most 5 MB.")
    actor = audit.Actor("customer", owner) if owner else audit.Actor("anonymous", "reporter")
    number, digest = service.attach_file(
        clients.firestore_client(), _files(), reference, incident, actor, content_type, payload
    )
    return web.json_response({"number": number, "size": len(payload), "sha256": digest}, 201)


def _staff_read(request: flask.Request) -> service.StaffAccess:
    principal, reason = access.require_staff_read(request, "security")
    return service.StaffAccess(_staff_actor(principal), access.client_address(request), reason)


def staff_attachment(request: flask.Request, reference: str, number: str) -> flask.Response:
    """Served to staff only, and never as something a browser would run or render."""
    staff = _staff_read(request)
    payload, filename = service.open_attachment(clients.firestore_client(), _files(), reference, number, staff)
    response = flask.Response(payload, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "no-store"
    return response


def _reporter_view(reference: str, incident: dict[str, Any], replies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reference": reference,
        "category": incident["category"],
        "state": incident["state"],
        "confirmed": incident["confirmed"],
        "received_at": incident["created_at"].isoformat(),
        "replies": [{"at": r["at"].isoformat(), "text": r["text"]} for r in replies],
    }


def reporter_status(request: flask.Request, reference: str) -> flask.Response:
    incident, _ = _reporters_incident(request, reference)
    replies = service.public_replies(clients.firestore_client(), reference)
    return web.json_response(_reporter_view(reference, incident, replies))


def confirm(request: flask.Request, reference: str) -> flask.Response:
    query = web.validate(request.args.to_dict(), TokenQuery)
    if not query.token:
        raise web.Problem(404, "incident-not-found", "Not found", "No such incident.")
    now = datetime.now(UTC)
    db = clients.firestore_client()
    incident, _ = service.confirm(db, reference, query.token, now)
    intake.page_on_call(db, _send_email(), reference, incident, now)
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


def staff_list(request: flask.Request) -> flask.Response:
    # Summaries name no reporter; the reason and the token are still asked, as for every staff read.
    access.require_staff_read(request, "security")
    query = web.validate({k: v for k, v in request.args.items() if k != access.STAFF_REASON}, ListQuery)
    wanted = {name: getattr(query, name) for name in ("state", "severity", "category") if getattr(query, name)}
    found = service.newest(clients.firestore_client(), wanted, STAFF_LIST_LIMIT)
    return web.json_response({"incidents": [_summary(reference, incident) for reference, incident in found]})


def staff_open(request: flask.Request, reference: str) -> flask.Response:
    incident, entries = service.open_for_staff(clients.firestore_client(), reference, _staff_read(request))
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
            for e in entries
        ],
    }
    return web.json_response(body)


def staff_triage(request: flask.Request, reference: str) -> flask.Response:
    principal = access.require_staff(request, "security")
    change = web.parse_json(request, service.Triage)
    db = clients.firestore_client()
    incident = service.triage(db, reference, change, _staff_actor(principal), intake.table(), datetime.now(UTC))
    return web.json_response(_summary(reference, incident))


def staff_note(request: flask.Request, reference: str) -> flask.Response:
    principal = access.require_staff(request, "security")
    note = web.parse_json(request, service.Note)
    db = clients.firestore_client()
    service.add_note(db, reference, note, _staff_actor(principal), datetime.now(UTC), mail_reporter=_send_email())
    return flask.Response(status=204)


def staff_mark_breach(request: flask.Request, reference: str) -> flask.Response:
    """A personal-data breach: the affected customers are told in their language, each once."""
    principal = access.require_staff(request, "security")
    notice = web.parse_json(request, service.BreachNotice)
    db = clients.firestore_client()
    mails = service.mark_breach(db, reference, notice, _staff_actor(principal), datetime.now(UTC))
    with events.left_for_later("breach notice emails"):
        send_email = _send_email()
        for mail in mails:
            send_staged(db, mail, send_email)
    return staff_breach_status(request, reference, status=202)


def staff_breach_status(request: flask.Request, reference: str, status: int = 200) -> flask.Response:
    # A read of its own; after marking the breach, the marking was the access.
    staff = _staff_read(request) if status == 200 else None
    incident, recipients = service.breach_status(clients.firestore_client(), reference, staff)
    rows = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in recipients]
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

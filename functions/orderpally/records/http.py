"""HTTP routes of records requests: the customer asks and downloads; staff see what is pending."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import flask

from orderpally import audit, clients, events, fields, outbox, web
from orderpally.access import guard as access
from orderpally.access.principal import Principal
from orderpally.config import settings
from orderpally.lifecycle import archive_limits as limits
from orderpally.lifecycle import export
from orderpally.records import service


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items() if k != "object"}


RECORDS_PATH = "/account/records-requests/{id}"


def create(request: flask.Request) -> flask.Response:
    from google.cloud import firestore

    principal = access.require_customer(request)
    wanted = web.parse_json(request, service.RecordsRange)
    now = datetime.now(UTC)
    db = clients.firestore_client()
    request_id = service.new_request_id()
    event = audit.AuditEvent(
        "records.requested",
        audit.Actor("customer", principal.account_id),
        access.client_address(request),
        None,
        {"request_id": request_id, "from": wanted.date_from.isoformat(), "to": wanted.date_to.isoformat()},
    )

    # The limit is taken in the transaction that records the request: two at once cannot both pass.
    @firestore.transactional
    def write(transaction: Any) -> tuple[dict[str, Any], outbox.Staged]:
        limits.reserve(transaction, db, principal.account_id, limits.RECORDS, service.RECORDS, request_id, now)
        record = service.create(
            db,
            principal.account_id,
            wanted,
            now,
            settings().export_valid_days,
            writer=transaction,
            request_id=request_id,
        )
        return record, outbox.stage(transaction, db, principal.account_id, event, None, now)

    try:
        record, staged = write(db.transaction())
    except (limits.InProgress, limits.DailyLimitReached) as exc:
        raise limits.problem(exc, "records request", RECORDS_PATH) from None
    outbox.announce(db, staged)
    with events.left_for_later("records build"):  # archive-redrive publishes a request left queued
        message = {"request_id": record["request_id"], "account_id": principal.account_id}
        events.publish(service.TOPIC, service.MESSAGE_TYPE, message)
    return web.json_response(_public(record), 202)


def _own(request: flask.Request, request_id: str) -> tuple[Principal, dict[str, Any]]:
    principal = access.require_customer(request)
    record = None
    if fields.ARCHIVE_ID.fullmatch(request_id):
        record = service.load(clients.firestore_client(), request_id)
    # Another customer's request is indistinguishable from none.
    if not record or record.get("account_id") != principal.account_id:
        raise web.Problem(404, "records-request-not-found", "Not found", "No such records request.")
    return principal, record


def status(request: flask.Request, request_id: str) -> flask.Response:
    _, record = _own(request, request_id)
    return web.json_response(_public(record))


def download(request: flask.Request, request_id: str) -> flask.Response:
    principal, record = _own(request, request_id)
    if record["status"] != "ready":
        raise web.Problem(409, "records-not-ready", "Not ready", "The records are still being collected.")
    if record["expires_at"] <= datetime.now(UTC):
        raise web.Problem(410, "records-expired", "Expired", "This file has expired; request the records again.")
    link = export.download_link(
        clients.storage_client().bucket(settings().exports_bucket),
        record["object"],
        f"orderpally-records-{request_id}.zip",
        clients.url_signing_credentials(),
        clients.storage_download_endpoint(),
        datetime.now(UTC),
    )
    # Recorded before the link leaves: every URL handed out is in the trail.
    audit.record(
        principal.account_id,
        audit.AuditEvent(
            "records.downloaded",
            audit.Actor("customer", principal.account_id),
            access.client_address(request),
            None,
            {"request_id": request_id},
        ),
    )
    return web.download_link(request, link, record["sha256"], record["size"])


def staff_pending(request: flask.Request) -> flask.Response:
    principal, reason = access.require_staff_read(request, "support", "admin")
    pending = service.pending(clients.firestore_client(), datetime.now(UTC))
    actor = audit.Actor(kind="staff", id=principal.account_id, role=",".join(sorted(principal.roles)) or None)
    # Each listed customer sees that staff looked at their pending request, and why.
    for account_id in sorted({row["account_id"] for row in pending}):
        audit.record(
            account_id,
            audit.AuditEvent("staff.read", actor, access.client_address(request), reason, {"what": "records_requests"}),
        )
    return web.json_response({"pending": pending})


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/account/records-requests", ("POST",), create),
    web.Route("/account/records-requests/<request_id>", ("GET",), status),
    web.Route("/account/records-requests/<request_id>/download", ("GET",), download),
    web.Route("/staff/records-requests", ("GET",), staff_pending),
)

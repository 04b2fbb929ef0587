"""HTTP routes of records requests: the customer asks and downloads; staff see what is pending."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import flask

from orderpally import audit, clients, events, web
from orderpally.access import guard as access
from orderpally.config import settings
from orderpally.records import service


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items() if k != "object"}


def create(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request)
    wanted = web.parse_json(request, service.RecordsRange)
    record = service.request(
        clients.firestore_client(),
        events.Publisher(clients.publisher),
        principal.account_id,
        wanted,
        client_address=access.client_address(request),
        now=datetime.now(UTC),
        valid_days=settings().export_valid_days,
    )
    return web.json_response(_public(record), 202)


def _own(request: flask.Request, request_id: str) -> dict[str, Any]:
    principal = access.require_customer(request)
    return service.owned(clients.firestore_client(), principal.account_id, request_id)


def status(request: flask.Request, request_id: str) -> flask.Response:
    return web.json_response(_public(_own(request, request_id)))


def download(request: flask.Request, request_id: str) -> flask.Response:
    record = _own(request, request_id)
    link = service.download(
        clients.firestore_client(),
        clients.storage_client().bucket(settings().exports_bucket),
        (clients.url_signing_credentials(), clients.storage_download_endpoint()),
        record,
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return web.download_link(request, link, record["sha256"], record["size"])


def staff_pending(request: flask.Request) -> flask.Response:
    principal, reason = access.require_staff_read(request, "support", "admin")
    actor = audit.Actor(kind="staff", id=principal.account_id, role=",".join(sorted(principal.roles)) or None)
    pending = service.pending_for_staff(
        clients.firestore_client(), actor, access.client_address(request), reason, datetime.now(UTC)
    )
    return web.json_response({"pending": pending})


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/account/records-requests", ("POST",), create),
    web.Route("/account/records-requests/<request_id>", ("GET",), status),
    web.Route("/account/records-requests/<request_id>/download", ("GET",), download),
    web.Route("/staff/records-requests", ("GET",), staff_pending),
)

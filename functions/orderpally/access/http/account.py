"""HTTP routes for a customer's keys and audit trail, and staff roles and audited staff reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import flask
import pydantic

from orderpally import clients, web
from orderpally.access import api_keys, service
from orderpally.access import guard as access
from orderpally.access.http import ports
from orderpally.access.principal import STAFF_ROLES


class NewKeyBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1, max_length=100)
    scopes: list[api_keys.Scope] = pydantic.Field(min_length=1, max_length=len(api_keys.SCOPES))
    expires_in_days: int = pydantic.Field(default=90, ge=1, le=365)


class RolesBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    roles: list[str] = pydantic.Field(max_length=len(STAFF_ROLES))
    reason: str = pydantic.Field(min_length=5, max_length=2000)

    @pydantic.field_validator("roles")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - STAFF_ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(unknown)}; use {', '.join(sorted(STAFF_ROLES))}")
        return sorted(set(value))


class PageQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    page_size: int = pydantic.Field(default=50, ge=1, le=200)
    page_token: str | None = pydantic.Field(default=None, max_length=300)


class StaffReadQuery(PageQuery):
    reason: str  # checked by access.require_staff_read; allowed here beside the paging fields


def _iso(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items()}


def create_key(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request, verified=True)
    body = web.parse_json(request, NewKeyBody)
    record, key = service.issue_key(
        ports(), principal, body.name, list(body.scopes), body.expires_in_days, access.client_address(request)
    )
    return web.json_response({**_iso(record), "key": key}, 201)


def list_keys(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request)
    return web.json_response({"api_keys": [_iso(k) for k in service.keys_of(ports(), principal)]})


def revoke_key(request: flask.Request, key_id: str) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "staff":
        raise access.forbidden("Staff cannot revoke a customer's key here.")
    # A key may revoke itself (a leaked key can be killed with nothing else at hand).
    if principal.kind == "api_key" and principal.credential_id != key_id:
        raise access.forbidden("An API key can revoke only itself.")
    service.revoke_key(ports(), principal, key_id, access.client_address(request))
    return flask.Response(status=204)


def _decode_token(token: str) -> int:
    seq = web.decode_page_token(token).get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63:  # Firestore integers are int64
        raise web.invalid_page_token()
    return seq


def _trail_page(account_id: str, query: PageQuery, for_customer: bool) -> dict[str, Any]:
    before = _decode_token(query.page_token) if query.page_token else None
    page = service.trail_page(clients.firestore_client(), account_id, query.page_size, before, for_customer)
    token = web.encode_page_token({"seq": page.entries[-1]["seq"]}) if page.more else None
    return {"entries": [_iso(e) for e in page.entries], "next_page_token": token}


def own_audit_trail(request: flask.Request) -> flask.Response:
    principal = access.require_audit_reader(request, "trail")
    query = web.validate(request.args.to_dict(), PageQuery)
    return web.json_response(_trail_page(principal.account_id, query, for_customer=True))


def _staff_read(request: flask.Request, account_id: str, what: str) -> tuple[StaffReadQuery, dict[str, Any]]:
    principal, reason = access.require_staff_read(request, "support", "security", "admin")
    query = web.validate(request.args.to_dict(), StaffReadQuery)
    account = service.staff_read(
        clients.firestore_client(), principal, account_id, what, reason, access.client_address(request)
    )
    return query, account


def staff_read_account(request: flask.Request, account_id: str) -> flask.Response:
    _, account = _staff_read(request, account_id, "account")
    return web.json_response({"id": account_id, **_iso(account)})


def staff_read_audit_trail(request: flask.Request, account_id: str) -> flask.Response:
    query, _ = _staff_read(request, account_id, "audit_trail")
    return web.json_response(_trail_page(account_id, query, for_customer=False))


def staff_verify_audit_trail(request: flask.Request, account_id: str) -> flask.Response:
    principal, reason = access.require_staff_read(request, "security", "admin")
    verdict = service.verify_trail(
        clients.firestore_client(), principal, account_id, reason, access.client_address(request)
    )
    return web.json_response(
        {
            "account_id": account_id,
            "entries": verdict.entries,
            "intact": verdict.intact,
            "first_broken_seq": verdict.first_broken_seq,
            "problem": verdict.problem,
        }
    )


def set_staff_roles(request: flask.Request, account_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin")
    body = web.parse_json(request, RolesBody)
    service.set_staff_roles(ports(), principal, account_id, body.roles, body.reason, access.client_address(request))
    return web.json_response({"account_id": account_id, "roles": body.roles})


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/account/api-keys", ("POST",), create_key),
    web.Route("/account/api-keys", ("GET",), list_keys),
    web.Route("/account/api-keys/<key_id>", ("DELETE",), revoke_key),
    web.Route("/account/audit-trail", ("GET",), own_audit_trail),
    web.Route("/staff/accounts/<account_id>", ("GET",), staff_read_account),
    web.Route("/staff/accounts/<account_id>/audit-trail", ("GET",), staff_read_audit_trail),
    web.Route("/staff/accounts/<account_id>/audit-trail/verification", ("GET",), staff_verify_audit_trail),
    web.Route("/staff/staff-roles/<account_id>", ("PUT",), set_staff_roles),
)

"""Every route by every kind of caller, with the status each cell must get, through the gateway.

Callers: anonymous; customers A and B (B reaching for A's objects); staff with each role;
A's API key with every scope, with no scope, and revoked; and A's signed-out session.
Bodies are `{}`: an allowed caller gets past authorization and is stopped by validation
(422) or by the object's state, a refused one never gets that far. A route added to a
function without a row here fails `test_every_route_has_a_row`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import requests

import main
from orderpally import audit, clients
from orderpally.access import api_keys
from orderpally.config import settings
from orderpally.notices import service as notices
from support.identities import FRONTEND_ORIGIN, browser_headers, create_customer, create_identity

pytestmark = pytest.mark.usefixtures("running_stack")

CALLERS = ("anon", "cust_a", "cust_b", "support", "security", "admin", "key_all", "key_none", "key_revoked", "ended")

# method path: statuses in CALLERS order. "{x}" parts are A's objects.
MATRIX: dict[str, str] = {
    # public
    "GET /health": "200 200 200 200 200 200 200 200 200 200",
    "GET /.well-known/security.txt": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices/page": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices/feed.atom": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices/{notice_id}": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices/slas/{sla_id}": "200 200 200 200 200 200 200 200 200 200",
    "GET /notices/checkpoints": "200 200 200 200 200 200 200 200 200 200",
    "GET /incidents/policy": "200 200 200 200 200 200 200 200 200 200",
    # sign-in
    "POST /auth/sign-up": "422 422 422 422 422 422 422 422 422 422",
    "POST /auth/sign-in": "422 422 422 422 422 422 422 422 422 422",
    "POST /auth/password-reset": "422 422 422 422 422 422 422 422 422 422",
    "GET /auth/session": "401 200 200 200 200 200 403 403 401 401",
    "POST /auth/password": "401 422 422 422 422 422 403 403 401 401",
    "POST /auth/email-verification": "401 409 409 403 403 403 403 403 401 401",
    "GET /auth/facebook/start": "302 302 302 302 302 302 302 302 302 302",
    "GET /auth/facebook/callback": "400 400 400 400 400 400 400 400 400 400",
    "GET /auth/facebook/link": "422 422 422 422 422 422 422 422 422 422",
    # the customer's own account
    "POST /account/api-keys": "401 422 422 403 403 403 403 403 401 401",
    "GET /account/api-keys": "401 200 200 403 403 403 403 403 401 401",
    # B asking for A's key learns nothing; a key may revoke only itself
    "DELETE /account/api-keys/{key_id}": "401 204 404 403 403 403 403 403 401 401",
    "GET /account/audit-trail": "401 200 200 403 403 403 200 403 401 401",
    "GET /account/trust-report": "401 200 200 403 403 403 200 403 401 401",
    # B's own trail, which no checkpoint holds yet: B never gets A's.
    "GET /account/audit-trail/proof": "401 200 409 403 403 403 200 403 401 401",
    "GET /account/audit-trail/consistency": "401 422 422 403 403 403 422 403 401 401",
    # A already has an export in progress (seeded), so A's callers get 409 pointing at it
    "POST /account/exports": "401 409 202 403 403 403 409 403 401 401",
    "GET /account/exports/{export_id}": "401 200 404 403 403 403 200 403 401 401",
    "GET /account/exports/{export_id}/download": "401 409 404 403 403 403 409 403 401 401",
    "POST /account/termination": "401 422 422 403 403 403 403 403 401 401",
    "GET /account/termination": "401 200 200 403 403 403 200 200 401 401",
    # the secret link mailed at termination, no sign-in: without its token, 422 for everyone
    "GET /account/deletion-certificate": "422 422 422 422 422 422 422 422 422 422",
    "DELETE /account/termination": "401 409 409 403 403 403 403 403 401 401",
    "POST /account/records-requests": "401 422 422 403 403 403 403 403 401 401",
    "GET /account/records-requests/{request_id}": "401 200 404 403 403 403 403 403 401 401",
    "GET /account/records-requests/{request_id}/download": "401 409 404 403 403 403 403 403 401 401",
    # incidents: the reporter (A) or the secret link; staff through /staff
    "POST /incidents": "422 422 422 403 403 403 403 403 401 401",
    "GET /incidents/{reference}": "404 200 404 404 404 404 404 404 401 401",
    "GET /incidents/{reference}/confirm": "404 404 404 404 404 404 404 404 404 404",
    # the body is JSON, not a file type: the reporter gets 415, everyone else no further than 404
    "POST /incidents/{reference}/attachments": "404 415 404 404 404 404 404 404 401 401",
    # staff
    "GET /staff/incidents": "401 403 403 403 422 403 403 403 401 401",
    "GET /staff/incidents/{reference}": "401 403 403 403 422 403 403 403 401 401",
    "PATCH /staff/incidents/{reference}": "401 403 403 403 422 403 403 403 401 401",
    "POST /staff/incidents/{reference}/notes": "401 403 403 403 422 403 403 403 401 401",
    "POST /staff/incidents/{reference}/breach": "401 403 403 403 422 403 403 403 401 401",
    "GET /staff/incidents/{reference}/breach": "401 403 403 403 422 403 403 403 401 401",
    "GET /staff/incidents/{reference}/attachments/{number}": "401 403 403 403 422 403 403 403 401 401",
    "GET /staff/accounts/{account_id}": "401 403 403 422 422 422 403 403 401 401",
    "GET /staff/accounts/{account_id}/audit-trail": "401 403 403 422 422 422 403 403 401 401",
    "GET /staff/accounts/{account_id}/trust-report": "401 403 403 422 422 422 403 403 401 401",
    "GET /staff/accounts/{account_id}/audit-trail/verification": "401 403 403 403 422 422 403 403 401 401",
    "GET /staff/accounts/{account_id}/billing": "401 403 403 422 422 422 403 403 401 401",
    "GET /staff/accounts/{account_id}/deletion-certificate": "401 403 403 422 422 422 403 403 401 401",
    "PUT /staff/staff-roles/{account_id}": "401 403 403 403 403 422 403 403 401 401",
    "POST /staff/accounts/{account_id}/termination": "401 403 403 403 403 422 403 403 401 401",
    "POST /staff/accounts/{account_id}/termination/cancellation": "401 403 403 403 403 422 403 403 401 401",
    "POST /staff/accounts/{account_id}/suspension": "401 403 403 403 403 422 403 403 401 401",
    "DELETE /staff/accounts/{account_id}/suspension": "401 403 403 403 403 409 403 403 401 401",
    "POST /staff/accounts/{account_id}/legal-holds": "401 403 403 403 422 422 403 403 401 401",
    # security releases the hold; admin, after it, finds nothing left to release
    "DELETE /staff/legal-holds/{hold_id}": "401 403 403 403 415 415 403 403 401 401",  # a reason is a JSON body
    "GET /staff/records-requests": "401 403 403 422 403 422 403 403 401 401",
    "POST /staff/notices": "401 403 403 403 403 422 403 403 401 401",
    "POST /staff/notices/{notice_id}/versions": "401 403 403 403 403 422 403 403 401 401",
    # these end sessions, so they run last, each caller with a fresh session of its own
    "POST /auth/sign-out": "401 204 204 204 204 204 403 403 401 401",
    "POST /auth/sign-out/everywhere": "401 204 204 204 204 204 403 403 401 401",
}
ENDS_SESSIONS = ("POST /auth/sign-out", "POST /auth/sign-out/everywhere")


def routes_in_code() -> set[str]:
    found = set()
    for router in main.ROUTERS.values():
        for path, methods in router().rules():
            template = path.replace("<", "{").replace(">", "}")
            found |= {f"{m} {template}" for m in methods - {"HEAD", "OPTIONS"}}
    return found


def test_every_route_has_a_row():
    assert set(MATRIX) == routes_in_code()
    assert all(len(row.split()) == len(CALLERS) for row in MATRIX.values())


def _key(account_id: str, scopes: list[str], revoked: bool = False) -> str:
    db = clients.firestore_client()
    now = datetime.now(UTC)
    record, key = api_keys.create(
        db, account_id, "matrix", scopes, now + timedelta(days=1), settings().secret("API_KEY_PEPPER"), now
    )
    if revoked:
        revoked_by_owner = audit.AuditEvent("api_key.revoked", audit.Actor("customer", account_id), None)
        api_keys.revoke(db, account_id, record["id"], now, revoked_by_owner)
    return key


def _callers() -> dict[str, dict[str, str]]:
    a, b = create_customer(), create_customer()
    ended = create_identity()  # stands for A's browser after sign-out: its cookie is on the revocation list
    clients.firestore_client().document(f"accounts/{ended.uid}").set({"status": "active", "email": ended.email})
    from orderpally.access.store import REVOKED_SESSIONS, session_digest

    clients.firestore_client().collection(REVOKED_SESSIONS).document(session_digest(ended.session_cookie)).set(
        {"expire_at": datetime.now(UTC) + timedelta(days=1)}
    )
    bearer = {"Origin": FRONTEND_ORIGIN}
    return {
        "anon": {"Origin": FRONTEND_ORIGIN},
        "cust_a": browser_headers(a),
        "cust_b": browser_headers(b),
        "support": browser_headers(create_identity(roles=["support"])),
        "security": browser_headers(create_identity(roles=["security"])),
        "admin": browser_headers(create_identity(roles=["admin"])),
        "key_all": {**bearer, "Authorization": f"Bearer {_key(a.uid, list(api_keys.SCOPES))}"},
        "key_none": {**bearer, "Authorization": f"Bearer {_key(a.uid, [])}"},
        "key_revoked": {**bearer, "Authorization": f"Bearer {_key(a.uid, ['audit:read'], revoked=True)}"},
        "ended": browser_headers(ended),
        "_a": {"uid": a.uid},
    }


def _objects(owner: str) -> dict[str, str]:
    """A's objects (and public ones) for the path parameters."""
    db = clients.firestore_client()
    now = datetime.now(UTC)
    db.document(f"content_exports/{'e' * 20}").set(
        {
            "export_id": "e" * 20,
            "account_id": owner,
            "status": "queued",
            "requested_at": now,
            "expires_at": now + timedelta(days=1),
        }
    )
    # The archive limit's record of that export, still in progress.
    db.document(f"archive_quotas/{owner}").set({"export": {"day": "2000-01-01", "count": 1, "active_id": "e" * 20}})
    db.document(f"records_requests/{'r' * 20}").set(
        {
            "request_id": "r" * 20,
            "account_id": owner,
            "from": "2026-01-01",
            "to": "2026-01-02",
            "status": "queued",
            "requested_at": now,
            "expires_at": now + timedelta(days=1),
        }
    )
    key_record, _ = api_keys.create(
        db, owner, "object", ["audit:read"], now + timedelta(days=1), settings().secret("API_KEY_PEPPER"), now
    )
    text = {"zh-TW": {"title": "t", "body": "b"}, "en": {"title": "t", "body": "b"}}
    draft = notices.NoticeDraft.model_validate(
        {
            "kind": "sla",
            "text": text,
            "affects": {"all": True},
            "effective_date": "2099-01-01",
            "sla": {"sla_id": "uptime", "action": "add"},
        }
    )
    notice = notices.create_notice(db, draft, "staff", now)
    reference = "OPI-AAAA-BBBB-CCCC"
    db.document(f"incidents/{reference}").set(
        {
            "category": "other",
            "description": "matrix",
            "references": [],
            "contact_email": "a@example.com",
            "reporter_account_id": owner,
            "state": "received",
            "severity": "medium",
            "confirmed": True,
            "status_token_hashes": [],
            "confirm_token_hashes": ["x"],
            "created_at": now,
            "language": "en",
            "first_response_due": now + timedelta(hours=1),
            "resolution_due": now + timedelta(days=1),
            "first_responded_at": None,
            "paged_at": None,
            "occurred_at": None,
        }
    )
    db.document("legal_holds/hold00000001").set(
        {"account_id": owner, "status": "active", "location_ids": [], "reason": "x", "authority": "x"}
    )
    _checkpoint(db, now)
    return {
        "key_id": key_record["id"],
        "export_id": "e" * 20,
        "request_id": "r" * 20,
        "notice_id": notice["id"],
        "sla_id": "uptime",
        "reference": reference,
        "account_id": owner,
        "hold_id": "hold00000001",
        "number": "1",
    }


def _checkpoint(db, now: datetime) -> None:
    """A signed checkpoint holding every chain so far (A's and B's included), as the schedule signs."""
    from orderpally.checkpoints import service as checkpoints
    from orderpally.checkpoints.signing import configured_signer

    ports = checkpoints.Ports(
        db=db,
        signer=configured_signer(),
        origin="matrix/audit",
        now=lambda: now,
        deletion_started=lambda chain_id: False,
        deleted_since=lambda moment: False,
    )
    checkpoints.publish(ports, force=True)


def _call(base: str, route: str, headers: dict[str, str], objects: dict[str, str]) -> int:
    method, template = route.split(" ", 1)
    path = template.format(**objects)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    response = requests.request(method, base + path, json=body, headers=headers, allow_redirects=False, timeout=30)
    assert response.status_code < 500, f"{route}: {response.status_code} {response.text[:200]}"
    return response.status_code


@pytest.fixture
def world() -> tuple[dict, dict]:
    callers = _callers()
    return callers, _objects(callers["_a"]["uid"])


def test_each_caller_gets_exactly_the_status_written_down(running_stack, world):
    callers, objects = world
    observed: dict[str, list[int]] = {}
    for route in [r for r in MATRIX if r not in ENDS_SESSIONS]:
        observed[route] = [_call(running_stack.gateway_url, route, callers[c], objects) for c in CALLERS]
    for route in ENDS_SESSIONS:
        fresh = _callers()
        observed[route] = [_call(running_stack.gateway_url, route, fresh[c], objects) for c in CALLERS]
    wrong = {
        route: " ".join(map(str, statuses))
        for route, statuses in observed.items()
        if " ".join(map(str, statuses)) != MATRIX[route]
    }
    if os.environ.get("MATRIX_PRINT"):
        for route, statuses in observed.items():
            print(f'    "{route}": "{" ".join(map(str, statuses))}",')
    assert wrong == {}, "observed (callers: " + " ".join(CALLERS) + ")"

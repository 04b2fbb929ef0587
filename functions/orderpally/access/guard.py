"""The HTTP edge of access control: sessions from cookies, CSRF, client addresses.

Browser sessions are Firebase session cookies in a `__Host-` cookie (Secure,
HttpOnly, SameSite=Lax, path /, no domain), verified with revocation checked
on every request. State-changing requests that ride on that cookie must come
from a configured frontend origin and echo the double-submit CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import flask

from orderpally import clients, web
from orderpally.access.principal import Principal, roles_from_claims
from orderpally.config import settings

if TYPE_CHECKING:
    from orderpally.access import limiter

SESSION_COOKIE = "__Host-op_session"
CSRF_COOKIE = "__Host-op_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REVOKED_SESSIONS = "revoked_sessions"
# Accounts whose API keys still work; suspension and termination stop them.
KEY_STATUSES = ("active", "terminating")


def unauthenticated(detail: str = "Sign in first.") -> web.Problem:
    return web.Problem(
        401, "unauthenticated", "Authentication required", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str = "You may not do this.") -> web.Problem:
    return web.Problem(403, "forbidden", "Forbidden", detail)


def too_many(exc: limiter.Limited) -> web.Problem:
    return web.Problem(
        429,
        "too-many-attempts",
        "Too many attempts",
        f"Try again in {exc.retry_after} seconds.",
        headers={"Retry-After": str(exc.retry_after)},
    )


def session_digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def principal_from_session_cookie(cookie: str) -> Principal:
    from firebase_admin import auth

    try:
        claims = auth.verify_session_cookie(cookie, check_revoked=True, app=clients.firebase_app())
    except auth.UserDisabledError:
        raise unauthenticated("This account is disabled.") from None
    except (auth.InvalidSessionCookieError, auth.RevokedSessionCookieError, auth.ExpiredSessionCookieError):
        raise unauthenticated("The session has ended; sign in again.") from None
    except ValueError:
        raise unauthenticated("The session has ended; sign in again.") from None
    # Signed out in this browser: the cookie is on the revocation list until it expires.
    if clients.firestore_client().collection(REVOKED_SESSIONS).document(session_digest(cookie)).get().exists:
        raise unauthenticated("The session has ended; sign in again.")
    roles = roles_from_claims(claims)
    return Principal(
        kind="staff" if roles else "customer",
        account_id=claims["uid"],
        email_verified=bool(claims.get("email_verified")),
        roles=roles,
        session_issued_at=claims.get("auth_time"),
        # Only this service mints custom tokens, and only after Facebook vouched for the user.
        facebook_proven=(claims.get("firebase") or {}).get("sign_in_provider") == "custom",
    )


def bearer_principal(token: str, request: flask.Request) -> Principal:
    """The API-key verifier behind `Authorization: Bearer`: any failure is the same 401."""
    # Imported here: most calls carry a session, and a function's cold start pays for each import.
    from orderpally import accounts, audit
    from orderpally.access import api_keys

    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        record = api_keys.verify(db, token, settings().secret("API_KEY_PEPPER"), now)
    except api_keys.KeyRejected:
        raise unauthenticated("The API key is not valid (unknown, revoked or expired).") from None
    account = accounts.load(db, record.account_id) or {}
    if account.get("status") not in KEY_STATUSES:
        raise unauthenticated("The API key's account cannot use keys now.")
    if record.needs_last_used:
        api_keys.note_use(db, record, client_address(request), now)
        if record.needs_use_audit:
            actor = audit.Actor("api_key", record.key_id)
            event = audit.AuditEvent("api_key.used", actor, client_address(request), None, {"key_id": record.key_id})
            audit.record(record.account_id, event)
    return Principal(
        kind="api_key",
        account_id=record.account_id,
        email_verified=True,
        scopes=record.scopes,
        credential_id=record.key_id,
    )


def authenticate(request: flask.Request) -> Principal | None:
    """The caller, None when anonymous; a Problem when credentials are present but bad."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Send an API key as 'Authorization: Bearer <key>'.")
        return bearer_principal(token.strip(), request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = principal_from_session_cookie(cookie)
        if request.method not in SAFE_METHODS:
            check_csrf(request)
        return principal
    return None


def require_principal(request: flask.Request) -> Principal:
    principal = authenticate(request)
    if principal is None:
        raise unauthenticated()
    return principal


def require_customer(request: flask.Request, *, verified: bool = False) -> Principal:
    """The customer themself in a browser session: not an API key, not staff; with `verified`,
    only once their identity is proven (a confirmed address, or a Facebook sign-in)."""
    principal = require_principal(request)
    if principal.kind != "customer":
        raise forbidden("Only the customer, signed in with a browser session, can do this.")
    if verified and not principal.identity_proven:
        raise web.Problem(403, "email-not-verified", "Email not verified", "Verify your email address first.")
    return principal


def require_staff(request: flask.Request, *roles: str) -> Principal:
    principal = require_principal(request)
    if principal.kind != "staff" or not principal.has_role(*roles):
        raise forbidden("This needs the staff role " + " or ".join(roles) + ".")
    return principal


STAFF_REASON = "reason"


def require_staff_read(request: flask.Request, *roles: str) -> tuple[Principal, str]:
    """A staff member reading customer data: the role, a written reason (query `reason`),
    and the CSRF token. The read is audited with that reason, so a link that a staff member
    follows (a navigation carries the cookie but never the header) must not make one."""
    principal = require_staff(request, *roles)
    check_csrf(request)
    reason = (request.args.get(STAFF_REASON) or "").strip()
    if not 5 <= len(reason) <= 500:
        raise web.Problem(
            422,
            "invalid-request",
            "Invalid request",
            "Staff reads of customer data need a reason of 5 to 500 characters.",
            field=STAFF_REASON,
        )
    return principal, reason


def request_origin(request: flask.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def check_origin(request: flask.Request) -> None:
    """Browsers always send Origin on cross-site POSTs; a foreign or missing one is refused."""
    if not web.origin_allowed(request_origin(request), settings().frontend_origins):
        raise web.Problem(403, "csrf-origin", "Cross-site request refused", "The request's Origin is not allowed.")


def check_csrf(request: flask.Request) -> None:
    check_origin(request)
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise web.Problem(
            403, "csrf-token", "CSRF token missing or wrong", f"Echo the {CSRF_COOKIE} cookie in {CSRF_HEADER}."
        )


def client_address(request: flask.Request) -> str | None:
    """The caller's IP: behind the load balancer, taken from X-Forwarded-For counting trusted hops."""
    hops = settings().trusted_proxy_hops
    candidate: str | None = request.remote_addr
    if hops:
        chain = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        candidate = chain[-hops] if len(chain) >= hops else None
    try:
        return str(ipaddress.ip_address(candidate)) if candidate else None
    except ValueError:
        return None

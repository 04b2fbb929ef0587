"""The HTTP edge of access control: sessions from cookies, CSRF, client addresses.

Browser sessions are Firebase session cookies in a `__Host-` cookie (Secure,
HttpOnly, SameSite=Lax, path /, no domain), verified with revocation checked
on every request. State-changing requests that ride on that cookie must come
from a configured frontend origin and echo the double-submit CSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
from datetime import UTC, datetime
from urllib.parse import urlsplit

import flask

from orderpally import clients, web
from orderpally.access import store
from orderpally.access.principal import Principal, roles_from_claims
from orderpally.access.refusals import forbidden, unauthenticated
from orderpally.access.sessions import CSRF_COOKIE, SESSION_COOKIE
from orderpally.access.store import session_digest
from orderpally.config import settings

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def principal_from_session_cookie(cookie: str) -> Principal:
    from firebase_admin import auth

    # Signed out in this browser: the cookie is on the revocation list until it expires. Read
    # while Firebase checks the cookie and its user (neither check needs the other's answer).
    signed_out = clients.background().submit(store.session_revoked, clients.firestore_client(), session_digest(cookie))
    try:
        claims = auth.verify_session_cookie(cookie, check_revoked=True, app=clients.firebase_app())
    except auth.UserDisabledError:
        raise unauthenticated("This account is disabled.") from None
    except (auth.InvalidSessionCookieError, auth.RevokedSessionCookieError, auth.ExpiredSessionCookieError):
        raise unauthenticated("The session has ended; sign in again.") from None
    except ValueError:
        raise unauthenticated("The session has ended; sign in again.") from None
    if signed_out.result():
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
    from orderpally.access import api_keys

    pepper = settings().secret("API_KEY_PEPPER")
    return api_keys.principal(clients.firestore_client(), token, pepper, client_address(request), datetime.now(UTC))


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


AUDIT_SCOPE = "audit:read"


def require_audit_reader(request: flask.Request, what: str) -> Principal:
    """The customer reading their own records (`what`: their trail, their trust report), or a key
    of theirs with the audit:read scope. Staff read these through /staff, with a reason."""
    principal = require_principal(request)
    if principal.kind == "staff":
        raise forbidden(f"Staff read a customer's {what} through /staff with a reason.")
    if principal.kind == "api_key" and not principal.has_scope(AUDIT_SCOPE):
        raise forbidden(f"This key lacks the {AUDIT_SCOPE} scope.")
    return principal


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

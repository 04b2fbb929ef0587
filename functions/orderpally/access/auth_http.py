"""HTTP routes of email sign-in (clauses 1.1, 5.2): sign-up, verification, sign-in, sessions, passwords.

Answers never tell whether an email address is registered: sign-up and reset
always answer 202 and mail the address what fits; sign-in answers one 401 for
an unknown address, a wrong password and a disabled account alike.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import pydantic

from orderpally import audit, clients, events, fields, outbox, web
from orderpally.access import http as access
from orderpally.access import identity_toolkit, limiter, passwords, sessions
from orderpally.access.principal import Principal
from orderpally.accounts import ACCOUNTS, AccountKind, Language, trail_is_open
from orderpally.messaging.requests import EmailRequest, request_email, send_staged, stage_email, unstage_email

# Per client address, every attempt; per address and account, failures only (so a
# victim is never locked out from their own address by someone else's guesses);
# per account across addresses, failures, loose enough to only slow a distributed guess.
SIGN_IN_PER_ADDRESS = limiter.Limit("sign-in-address", 30, timedelta(minutes=10))
SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS = limiter.Limit("sign-in-account-address", 5, timedelta(minutes=15))
SIGN_IN_FAILURES_PER_ACCOUNT = limiter.Limit("sign-in-account", 100, timedelta(hours=1))
SIGN_UP_PER_ADDRESS = limiter.Limit("sign-up-address", 10, timedelta(hours=1))
RESET_PER_ADDRESS = limiter.Limit("reset-address", 10, timedelta(hours=1))
RESET_PER_ACCOUNT = limiter.Limit("reset-account", 3, timedelta(hours=1))
MAX_PASSWORD_INPUT = 1024  # bounded before anything hashes it


def _email(value: str) -> str:
    return value.strip().lower()


class SignUpBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    email: fields.MailAddress
    password: str = pydantic.Field(max_length=MAX_PASSWORD_INPUT)
    display_name: str = pydantic.Field(min_length=1, max_length=100)
    kind: AccountKind
    language: Language = "zh-TW"

    @pydantic.field_validator("display_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("must be printable text")
        return value.strip()


class SignInBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    email: fields.MailAddress
    password: str = pydantic.Field(min_length=1, max_length=MAX_PASSWORD_INPUT)


class ResetBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    email: fields.MailAddress


class PasswordChangeBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    current_password: str = pydantic.Field(min_length=1, max_length=MAX_PASSWORD_INPUT)
    new_password: str = pydantic.Field(max_length=MAX_PASSWORD_INPUT)


def too_many(exc: limiter.Limited) -> web.Problem:
    return web.Problem(
        429,
        "too-many-attempts",
        "Too many attempts",
        f"Try again in {exc.retry_after} seconds.",
        headers={"Retry-After": str(exc.retry_after)},
    )


def _weak_password(password: str, field: str) -> None:
    problem = passwords.problem_with(password)
    if problem:
        raise web.Problem(422, "weak-password", "Password not accepted", problem, field=field)


def _actor(principal: Principal) -> audit.Actor:
    return audit.Actor(kind=principal.kind, id=principal.account_id, role=",".join(sorted(principal.roles)) or None)


def audit_event(
    request: flask.Request, account_id: str, action: str, actor: audit.Actor | None = None, **details: Any
) -> None:
    actor = actor or audit.Actor(kind="customer", id=account_id)
    audit.record(account_id, audit.AuditEvent(action, actor, access.client_address(request), None, details))


def _mail(template: str, to: str, key: str, account_id: str | None, language: str | None, **data: Any) -> None:
    request_email(
        EmailRequest(
            idempotency_key=key, template=template, to_email=to, account_id=account_id, language=language, data=data
        )
    )


def address_key(request: flask.Request) -> str:
    return access.client_address(request) or "unknown"


def mail_to(account_id: str, email: str, template: str, key: str, **data: Any) -> None:
    """Mails an account holder in their stored language."""
    _mail(template, email, key, account_id, None, **data)


def _accepted() -> flask.Response:
    return web.json_response(
        {"status": "accepted", "detail": "If the address can receive mail, a message is on its way."}, 202
    )


def sign_up(request: flask.Request) -> flask.Response:
    from firebase_admin import auth

    access.check_origin(request)
    body = web.parse_json(request, SignUpBody)
    _weak_password(body.password, "password")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        limiter.hit(db, SIGN_UP_PER_ADDRESS, address_key(request), now)
    except limiter.Limited as exc:
        raise too_many(exc) from None
    email = _email(body.email)
    try:
        user = auth.create_user(
            email=email,
            password=body.password,
            display_name=body.display_name,
            email_verified=False,
            app=clients.firebase_app(),
        )
    except auth.EmailAlreadyExistsError:
        _mail("sign_up_existing", email, f"sign_up_existing:{email}:{now:%Y%m%d%H}", None, body.language)
        return _accepted()
    db.collection(ACCOUNTS).document(user.uid).create(
        {
            "kind": body.kind,
            "display_name": body.display_name,
            "email": email,
            "language": body.language,
            "status": "active",
            "plan": None,
            "features": [],
            "created_at": now,
        }
    )
    link = auth.generate_email_verification_link(email, app=clients.firebase_app())
    _mail(
        "verify_email",
        email,
        f"verify_email:{user.uid}:1",
        user.uid,
        body.language,
        display_name=body.display_name,
        link=link,
    )
    audit_event(request, user.uid, "account.created")
    return _accepted()


def resend_verification(request: flask.Request) -> flask.Response:
    from firebase_admin import auth

    principal = access.require_customer(request)
    if principal.email_verified:
        raise web.Problem(409, "email-already-verified", "Already verified", "This email address is verified.")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        limiter.hit(db, RESET_PER_ACCOUNT, f"verify:{principal.account_id}", now)
    except limiter.Limited as exc:
        raise too_many(exc) from None
    user = auth.get_user(principal.account_id, app=clients.firebase_app())
    if not user.email:  # e.g. a Facebook account with a phone number only: nothing to verify
        raise web.Problem(409, "no-email-address", "No email address", "This account has no email address.")
    link = auth.generate_email_verification_link(user.email, app=clients.firebase_app())
    _mail(
        "verify_email",
        user.email,
        f"verify_email:{user.uid}:{now.isoformat()}",
        user.uid,
        None,
        display_name=user.display_name or "",
        link=link,
    )
    return _accepted()


def _failure_counters(address: str, email: str) -> tuple[tuple[limiter.Limit, str], ...]:
    return ((SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS, f"{email}|{address}"), (SIGN_IN_FAILURES_PER_ACCOUNT, email))


def _check_sign_in_limits(db: Any, address: str, email: str, now: datetime) -> None:
    """Counts the attempt, as a failure until it succeeds: concurrent guesses cannot all slip in under the limit."""
    try:
        limiter.hit_all(db, [(SIGN_IN_PER_ADDRESS, address), *_failure_counters(address, email)], now)
    except limiter.Limited as exc:
        raise too_many(exc) from None


def _forgive_attempt(db: Any, address: str, email: str, now: datetime) -> None:
    """A successful sign-in was no failure."""
    limiter.refund_all(db, _failure_counters(address, email), now)


def uid_for(email: str) -> str | None:
    from firebase_admin import auth

    try:
        return auth.get_user_by_email(email, app=clients.firebase_app()).uid
    except auth.UserNotFoundError:
        return None


def wrong_credentials() -> web.Problem:
    return web.Problem(401, "invalid-credentials", "Sign-in failed", "The email address or password is wrong.")


def identity_unavailable(exc: identity_toolkit.IdentityUnavailable) -> web.Problem:
    """503: Identity Platform did not check anything. A configuration fault (logged with an alert) lasts longer."""
    retry = "60" if isinstance(exc, identity_toolkit.IdentityMisconfigured) else "5"
    return web.Problem(
        503, "identity-unavailable", "Sign-in unavailable", "Try again shortly.", headers={"Retry-After": retry}
    )


def _verify_password(request: flask.Request, email: str, password: str, now: datetime) -> identity_toolkit.SignedIn:
    """Checks the password under the sign-in limits; audits a failure on the account it names."""
    db = clients.firestore_client()
    address = address_key(request)
    _check_sign_in_limits(db, address, email, now)
    try:
        signed_in = identity_toolkit.sign_in_with_password(email, password)
    except identity_toolkit.WrongCredentials:
        uid = uid_for(email)
        if uid and trail_is_open(db, uid):
            audit_event(request, uid, "sign_in.failed", audit.Actor(kind="anonymous", id="unknown"))
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        # Nobody checked the password (Identity Platform down, or refusing our API key or
        # configuration): no failure is counted and nothing is written to the account's trail.
        _forgive_attempt(db, address, email, now)
        raise identity_unavailable(exc) from None
    _forgive_attempt(db, address, email, now)
    return signed_in


def _session_body(principal_uid: str, email_verified: bool, roles: list[str], csrf: str) -> dict[str, Any]:
    account = clients.firestore_client().collection(ACCOUNTS).document(principal_uid).get().to_dict() or {}
    return {
        "account_id": principal_uid,
        "kind": "staff" if roles else account.get("kind"),
        "roles": roles,
        "email_verified": email_verified,
        "display_name": account.get("display_name"),
        "language": account.get("language"),
        "csrf_token": csrf,
    }


def start_session(
    request: flask.Request, signed_in: identity_toolkit.SignedIn, method: str, redirect_to: str | None = None
) -> flask.Response:
    """Sets the session cookies on a JSON answer, or on a redirect after a browser round trip."""
    from firebase_admin import auth

    cookie = sessions.mint(signed_in.id_token)
    claims = auth.verify_session_cookie(cookie, app=clients.firebase_app())
    roles = sorted(access.roles_from_claims(claims))
    csrf = secrets.token_urlsafe(32)
    if redirect_to:
        response = flask.Response(status=303, headers={"Location": redirect_to, "Cache-Control": "no-store"})
    else:
        response = web.json_response(_session_body(signed_in.uid, bool(claims.get("email_verified")), roles, csrf))
    sessions.set_cookies(response, cookie, csrf)
    audit_event(request, signed_in.uid, "sign_in.succeeded", method=method)
    return response


def sign_in(request: flask.Request) -> flask.Response:
    access.check_origin(request)
    body = web.parse_json(request, SignInBody)
    now = datetime.now(UTC)
    signed_in = _verify_password(request, _email(body.email), body.password, now)
    return start_session(request, signed_in, "password")


def current_session(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("API keys have no session.")
    body = _session_body(principal.account_id, principal.email_verified, sorted(principal.roles), "")
    body.pop("csrf_token")
    return web.json_response(body)


def sign_out(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("Revoke an API key instead.")
    everywhere = request.path.endswith("/everywhere")
    now = datetime.now(UTC)
    if everywhere:
        sessions.revoke_all(principal.account_id)
    sessions.revoke_one(clients.firestore_client(), request.cookies[access.SESSION_COOKIE], now)
    audit_event(request, principal.account_id, "sign_out.everywhere" if everywhere else "sign_out", _actor(principal))
    response = flask.Response(status=204)
    sessions.clear_cookies(response)
    return response


def request_password_reset(request: flask.Request) -> flask.Response:
    from firebase_admin import auth

    access.check_origin(request)
    body = web.parse_json(request, ResetBody)
    email = _email(body.email)
    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        limiter.hit_all(db, [(RESET_PER_ADDRESS, address_key(request)), (RESET_PER_ACCOUNT, email)], now)
    except limiter.Limited as exc:
        if exc.limit is RESET_PER_ADDRESS:
            raise too_many(exc) from None
        return _accepted()  # a per-account limit must not tell the address is registered
    uid = uid_for(email)
    if uid and trail_is_open(db, uid):  # a terminated account gets no reset link and no new trail
        link = auth.generate_password_reset_link(email, app=clients.firebase_app())
        _mail("password_reset", email, f"password_reset:{uid}:{now.isoformat()}", uid, None, link=link)
        audit_event(request, uid, "password_reset.requested", audit.Actor(kind="anonymous", id="unknown"))
    return _accepted()


def change_password(request: flask.Request) -> flask.Response:
    from firebase_admin import auth

    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("Change the password from a signed-in browser.")
    body = web.parse_json(request, PasswordChangeBody)
    _weak_password(body.new_password, "new_password")
    now = datetime.now(UTC)
    user = auth.get_user(principal.account_id, app=clients.firebase_app())
    _verify_password(request, user.email, body.current_password, now)
    db = clients.firestore_client()
    notice = EmailRequest(
        idempotency_key=f"password_changed:{user.uid}:{now.isoformat()}",
        template="password_changed",
        to_email=user.email,
        account_id=user.uid,
    )
    # The owner's warning is staged before the change: a crash after the change still sends it
    # (the redrive), and one before it sends a needless warning, never none.
    staging = db.batch()
    stage_email(staging, db, notice, now)
    staging.commit()
    try:
        auth.update_user(user.uid, password=body.new_password, app=clients.firebase_app())
    except Exception:
        unstage_email(db, notice)
        raise
    events.inject_fault(outbox.FAULTS, "after-password-change")
    sessions.revoke_all(user.uid)
    audit_event(request, user.uid, "password.changed", _actor(principal))
    with events.left_for_later("password-changed email"):
        send_staged(db, notice)
    # Every session ended with the old password; this browser continues with a new one.
    signed_in = _verify_password(request, user.email, body.new_password, datetime.now(UTC))
    return start_session(request, signed_in, "password_change")


def register(routes: web.Router) -> None:
    routes.route("/auth/sign-up", methods=["POST"])(sign_up)
    routes.route("/auth/sign-in", methods=["POST"])(sign_in)
    routes.route("/auth/session", methods=["GET"])(current_session)
    routes.route("/auth/sign-out", methods=["POST"])(sign_out)
    routes.route("/auth/sign-out/everywhere", methods=["POST"])(sign_out)
    routes.route("/auth/password-reset", methods=["POST"])(request_password_reset)
    routes.route("/auth/password", methods=["POST"])(change_password)
    routes.route("/auth/email-verification", methods=["POST"])(resend_verification)

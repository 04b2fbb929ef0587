"""HTTP routes of email sign-in (clauses 1.1, 5.2): sign-up, verification, sign-in, sessions, passwords.

Answers never tell whether an email address is registered: sign-up and reset
always answer 202 and mail the address what fits; sign-in answers one 401 for
an unknown address, a wrong password and a disabled account alike. Nor does
their timing: registered and unregistered addresses make the same round trips
before the answer (the registered one's audit entry is staged, linked by the
trail's next reader; its mail is staged and published without waiting).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import pydantic

from orderpally import accounts, audit, clients, events, fields, outbox, web
from orderpally.access import guard as access
from orderpally.access import identity_toolkit, limiter, passwords, sessions
from orderpally.access.principal import Principal
from orderpally.accounts import AccountKind, Language, trail_is_open
from orderpally.config import settings
from orderpally.messaging.requests import (
    MESSAGE_TYPE,
    TOPIC,
    EmailRequest,
    mail,
    send_staged,
    stage_email,
    unstage_email,
)

# Password attempts count as failures until they succeed (then they are given back).
# A browser without a device cookie for the account: per client address; per address and
# account; per account across addresses, loose enough to only slow a distributed guess.
# Strangers can exhaust that last one, so a browser with the account's device cookie is
# exempt from all three and limited only on its own counter (OWASP device cookies).
SIGN_IN_PER_ADDRESS = limiter.Limit("sign-in-address", 30, timedelta(minutes=10))
SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS = limiter.Limit("sign-in-account-address", 5, timedelta(minutes=15))
SIGN_IN_FAILURES_PER_ACCOUNT = limiter.Limit("sign-in-account", 100, timedelta(hours=1))
SIGN_IN_FAILURES_PER_DEVICE = limiter.Limit("sign-in-device", 10, timedelta(minutes=15))
# The current password at a password change: per session, which only its holder can use.
PASSWORD_CHECKS_PER_SESSION = limiter.Limit("password-check-session", 5, timedelta(minutes=15))
# Tallies only (never refuse): the write an unregistered address makes where a registered one
# stages its audit entry, so both answer after the same round trips.
UNREGISTERED_SIGN_IN_FAILURES = limiter.Limit("sign-in-unregistered", 1_000_000, timedelta(hours=1))
UNREGISTERED_RESETS = limiter.Limit("reset-unregistered", 1_000_000, timedelta(hours=1))
SIGN_UP_PER_ADDRESS = limiter.Limit("sign-up-address", 10, timedelta(hours=1))
RESET_PER_ADDRESS = limiter.Limit("reset-address", 10, timedelta(hours=1))
RESET_PER_ACCOUNT = limiter.Limit("reset-account", 3, timedelta(hours=1))
MAX_PASSWORD_INPUT = 1024  # bounded before anything hashes it
# Read where an unregistered address has no account: the same Firestore read a registered one makes.
NO_ACCOUNT = "~unregistered"
CSRF_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")


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


def _weak_password(password: str, field: str) -> None:
    problem = passwords.problem_with(password)
    if problem:
        raise web.Problem(422, "weak-password", "Password not accepted", problem, field=field)


def _actor(principal: Principal) -> audit.Actor:
    return audit.Actor(kind=principal.kind, id=principal.account_id, role=",".join(sorted(principal.roles)) or None)


def _event(
    request: flask.Request, account_id: str, action: str, actor: audit.Actor | None = None, **details: Any
) -> audit.AuditEvent:
    actor = actor or audit.Actor(kind="customer", id=account_id)
    return audit.AuditEvent(action, actor, access.client_address(request), None, details)


def audit_event(
    request: flask.Request, account_id: str, action: str, actor: audit.Actor | None = None, **details: Any
) -> None:
    audit.record(account_id, _event(request, account_id, action, actor, **details))


def address_key(request: flask.Request) -> str:
    return access.client_address(request) or "unknown"


def mail_to(account_id: str, email: str, template: str, key: str, **data: Any) -> None:
    """Mails an account holder in their stored language."""
    mail(template, email, key, account_id, None, **data)


def publish_later(db: Any, notice: EmailRequest) -> None:
    """Publishes a mail staged in the outbox without holding the answer for Pub/Sub's reply.

    Once published it leaves the outbox; if the publish fails or never finishes, the
    archive-redrive schedule publishes it (its idempotency key keeps it to one mail).
    """

    def published(future: Any) -> None:
        if future.exception() is None:
            with events.left_for_later("unstaging a published mail"):
                unstage_email(db, notice)

    with events.left_for_later(f"{notice.template} email"):
        events.publish_async(TOPIC, MESSAGE_TYPE, notice.model_dump(mode="json")).add_done_callback(published)


def action_code_settings() -> Any:
    """Mailed links return the browser to the frontend (its first origin), which asks
    `GET /auth/session` for the account's state; frontend origins are authorised domains."""
    from firebase_admin import auth

    return auth.ActionCodeSettings(url=settings().frontend_origins[0] + "/")


def _accepted() -> flask.Response:
    return web.json_response(
        {"status": "accepted", "detail": "If the address can receive mail, a message is on its way."}, 202
    )


def sign_up(request: flask.Request) -> flask.Response:
    from firebase_admin import auth
    from firebase_admin import exceptions as firebase_exceptions

    access.check_origin(request)
    body = web.parse_json(request, SignUpBody)
    _weak_password(body.password, "password")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        limiter.hit(db, SIGN_UP_PER_ADDRESS, address_key(request), now)
    except limiter.Limited as exc:
        raise access.too_many(exc) from None
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
        # The Auth round trips a new address makes after its creation (its user read back, its
        # verification link), made here too so the time does not tell; the link is not sent.
        uid_for(email)
        with contextlib.suppress(firebase_exceptions.FirebaseError):
            auth.generate_email_verification_link(
                email, action_code_settings=action_code_settings(), app=clients.firebase_app()
            )
        notice = EmailRequest(
            idempotency_key=f"sign_up_existing:{email}:{now:%Y%m%d%H}",
            template="sign_up_existing",
            to_email=email,
            language=body.language,
        )
        batch = db.batch()
        stage_email(batch, db, notice, now)
        batch.commit()
        publish_later(db, notice)
        return _accepted()
    link = auth.generate_email_verification_link(
        email, action_code_settings=action_code_settings(), app=clients.firebase_app()
    )
    notice = EmailRequest(
        idempotency_key=f"verify_email:{user.uid}:1",
        template="verify_email",
        to_email=email,
        account_id=user.uid,
        language=body.language,
        data={"display_name": body.display_name, "link": link},
    )
    # The account, its first trail entry and its mail in one commit, like an existing address's one.
    batch = db.batch()
    accounts.create(
        db,
        user.uid,
        {
            "kind": body.kind,
            "display_name": body.display_name,
            "email": email,
            "language": body.language,
            "status": "active",
            "plan": None,
            "features": [],
            "created_at": now,
        },
        writer=batch,
    )
    audit.stage(batch, audit.account_chain(user.uid), _event(request, user.uid, "account.created"), now)
    stage_email(batch, db, notice, now)
    batch.commit()
    publish_later(db, notice)
    return _accepted()


def resend_verification(request: flask.Request) -> flask.Response:
    from firebase_admin import auth

    principal = access.require_customer(request)
    user = auth.get_user(principal.account_id, app=clients.firebase_app())
    # Firebase Auth's state, not the session's claim: the link may have been followed since sign-in.
    if user.email_verified:
        raise web.Problem(409, "email-already-verified", "Already verified", "This email address is verified.")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    try:
        limiter.hit(db, RESET_PER_ACCOUNT, f"verify:{principal.account_id}", now)
    except limiter.Limited as exc:
        raise access.too_many(exc) from None
    if not user.email:  # e.g. a Facebook account with a phone number only: nothing to verify
        raise web.Problem(409, "no-email-address", "No email address", "This account has no email address.")
    link = auth.generate_email_verification_link(
        user.email, action_code_settings=action_code_settings(), app=clients.firebase_app()
    )
    mail(
        "verify_email",
        user.email,
        f"verify_email:{user.uid}:{now.isoformat()}",
        user.uid,
        None,
        display_name=user.display_name or "",
        link=link,
    )
    return _accepted()


def sign_in_counters(address: str, email: str, device: str | None) -> tuple[tuple[limiter.Limit, str], ...]:
    """The counters a password attempt is counted on: a trusted browser (`device`, the nonce of its
    device cookie for this account) only on its own, so strangers' guesses never lock it out."""
    if device:
        return ((SIGN_IN_FAILURES_PER_DEVICE, device),)
    return (
        (SIGN_IN_PER_ADDRESS, address),
        (SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS, f"{email}|{address}"),
        (SIGN_IN_FAILURES_PER_ACCOUNT, email),
    )


def _count_attempt(db: Any, counters: tuple[tuple[limiter.Limit, str], ...], now: datetime) -> None:
    """Counts the attempt, as a failure until it succeeds: concurrent guesses cannot all slip in under the limit."""
    try:
        limiter.hit_all(db, counters, now)
    except limiter.Limited as exc:
        raise access.too_many(exc) from None


def trusted_device(request: flask.Request, email: str, now: datetime) -> sessions.Device | None:
    """The browser's device cookie, if it proves an earlier password sign-in to this account that
    neither "sign out everywhere" nor a password change has ended since."""
    from firebase_admin import auth

    token = request.cookies.get(sessions.DEVICE_COOKIE)
    if not token:
        return None
    device = sessions.read_device(settings().secret("API_KEY_PEPPER"), token, email, now)
    if device is None:
        return None
    # Only a browser that signed in to this address before gets here: the lookup reveals nothing.
    try:
        user = auth.get_user_by_email(email, app=clients.firebase_app())
    except auth.UserNotFoundError:
        return None
    return None if sessions.device_revoked(device, user.tokens_valid_after_timestamp) else device


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
    device = trusted_device(request, email, now)
    counters = sign_in_counters(address_key(request), email, device.nonce if device else None)
    _count_attempt(db, counters, now)
    try:
        signed_in = identity_toolkit.sign_in_with_password(email, password)
    except identity_toolkit.WrongCredentials:
        _record_failure(request, db, email, now)
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        # Nobody checked the password (Identity Platform down, or refusing our API key or
        # configuration): no failure is counted and nothing is written to the account's trail.
        limiter.refund_all(db, counters, now)
        raise identity_unavailable(exc) from None
    limiter.refund_all(db, counters, now)  # a success was no failure, on any counter
    return signed_in


def _record_failure(request: flask.Request, db: Any, email: str, now: datetime) -> None:
    """The failure in the named account's trail: staged, for the trail's next reader to link.

    Registered or not, the same round trips: a user lookup, an account read, one commit.
    """
    uid = uid_for(email)
    open_trail = trail_is_open(db, uid or NO_ACCOUNT)
    batch = db.batch()
    if uid and open_trail:
        event = _event(request, uid, "sign_in.failed", audit.Actor(kind="anonymous", id="unknown"))
        audit.stage(batch, audit.account_chain(uid), event, now)
    else:
        limiter.tally(batch, db, UNREGISTERED_SIGN_IN_FAILURES, email, now)
    batch.commit()


def _session_body(
    principal_uid: str, email_verified: bool, roles: list[str], csrf: str, session_email_verified: bool | None = None
) -> dict[str, Any]:
    account = accounts.load(clients.firestore_client(), principal_uid) or {}
    return {
        "account_id": principal_uid,
        "kind": "staff" if roles else account.get("kind"),
        "roles": roles,
        "email_verified": email_verified,
        # What this session proves (actions that need a verified address go by it): false while
        # email_verified is true means the address was verified after sign-in; sign in again.
        "session_email_verified": email_verified if session_email_verified is None else session_email_verified,
        "display_name": account.get("display_name"),
        "language": account.get("language"),
        "csrf_token": csrf,
    }


def start_session(
    request: flask.Request,
    signed_in: identity_toolkit.SignedIn,
    method: str,
    redirect_to: str | None = None,
    trusted_email: str | None = None,
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
    if trusted_email:  # a password sign-in: this browser is now trusted for the account
        secret = settings().secret("API_KEY_PEPPER")
        sessions.set_device_cookie(response, sessions.device_token(secret, trusted_email, datetime.now(UTC)))
    audit_event(request, signed_in.uid, "sign_in.succeeded", method=method)
    return response


def sign_in(request: flask.Request) -> flask.Response:
    access.check_origin(request)
    body = web.parse_json(request, SignInBody)
    now = datetime.now(UTC)
    email = _email(body.email)
    signed_in = _verify_password(request, email, body.password, now)
    return start_session(request, signed_in, "password", trusted_email=email)


def current_session(request: flask.Request) -> flask.Response:
    """The session, with its CSRF token (a frontend on another origin cannot read the cookie) and
    the address's verification state as Firebase Auth holds it now."""
    from firebase_admin import auth

    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("API keys have no session.")
    user = auth.get_user(principal.account_id, app=clients.firebase_app())
    # Only frontend origins get CORS answers (web.py), so no other site's page can read the token.
    csrf = request.cookies.get(access.CSRF_COOKIE, "")
    fresh = not CSRF_TOKEN_SHAPE.fullmatch(csrf)
    if fresh:  # lost or mangled: a new one, set like at sign-in
        csrf = secrets.token_urlsafe(32)
    body = _session_body(
        principal.account_id, bool(user.email_verified), sorted(principal.roles), csrf, principal.email_verified
    )
    response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    if fresh:
        sessions.set_csrf_cookie(response, csrf)
    return response


def sign_out(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("Revoke an API key instead.")
    everywhere = request.path.endswith("/everywhere")
    now = datetime.now(UTC)
    if everywhere:
        sessions.revoke_all(principal.account_id)  # device cookies issued before end too
    sessions.revoke_one(clients.firestore_client(), request.cookies[access.SESSION_COOKIE], now)
    audit_event(request, principal.account_id, "sign_out.everywhere" if everywhere else "sign_out", _actor(principal))
    response = flask.Response(status=204)
    sessions.clear_cookies(response)
    if everywhere:
        sessions.clear_device_cookie(response)
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
            raise access.too_many(exc) from None
        return _accepted()  # a per-account limit must not tell the address is registered
    # Registered or not, the same round trips before the answer: a user lookup, an account read,
    # a link request (refused for an unknown address), one commit; the mail is published after.
    uid = uid_for(email)
    open_trail = trail_is_open(db, uid or NO_ACCOUNT)
    try:
        link = auth.generate_password_reset_link(
            email, action_code_settings=action_code_settings(), app=clients.firebase_app()
        )
    except (auth.EmailNotFoundError, auth.UserNotFoundError):
        link = None
    batch = db.batch()
    notice = None
    if uid and open_trail and link:  # a terminated account gets no reset link and no new trail
        notice = EmailRequest(
            idempotency_key=f"password_reset:{uid}:{now.isoformat()}",
            template="password_reset",
            to_email=email,
            account_id=uid,
            data={"link": link},
        )
        stage_email(batch, db, notice, now)
        event = _event(request, uid, "password_reset.requested", audit.Actor(kind="anonymous", id="unknown"))
        audit.stage(batch, audit.account_chain(uid), event, now)
    else:
        limiter.tally(batch, db, UNREGISTERED_RESETS, email, now)
    batch.commit()
    if notice is not None:
        publish_later(db, notice)
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
    db = clients.firestore_client()
    _check_current_password(request, db, principal, user.email, body.current_password, now)
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
    # Every session ended with the old password; this browser continues with a new one. The
    # password was set a moment ago, so no guess is being checked: no sign-in limit applies.
    try:
        signed_in = identity_toolkit.sign_in_with_password(user.email, body.new_password)
    except identity_toolkit.IdentityUnavailable as exc:
        raise identity_unavailable(exc) from None
    return start_session(request, signed_in, "password_change", trusted_email=_email(user.email))


def _check_current_password(
    request: flask.Request, db: Any, principal: Principal, email: str, password: str, now: datetime
) -> None:
    """The current password at a change, limited per session: the signed-in holder's own counter,
    which no stranger's guesses at the sign-in form can fill."""
    counters = ((PASSWORD_CHECKS_PER_SESSION, access.session_digest(request.cookies[access.SESSION_COOKIE])),)
    _count_attempt(db, counters, now)
    try:
        identity_toolkit.sign_in_with_password(email, password)
    except identity_toolkit.WrongCredentials:
        audit_event(request, principal.account_id, "password_change.failed", _actor(principal))
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        limiter.refund_all(db, counters, now)
        raise identity_unavailable(exc) from None
    limiter.refund_all(db, counters, now)


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/auth/sign-up", ("POST",), sign_up),
    web.Route("/auth/sign-in", ("POST",), sign_in),
    web.Route("/auth/session", ("GET",), current_session),
    web.Route("/auth/sign-out", ("POST",), sign_out),
    web.Route("/auth/sign-out/everywhere", ("POST",), sign_out),
    web.Route("/auth/password-reset", ("POST",), request_password_reset),
    web.Route("/auth/password", ("POST",), change_password),
    web.Route("/auth/email-verification", ("POST",), resend_verification),
)

"""HTTP routes of Facebook sign-in: start, callback, and linking to an existing account by email.

The `state` parameter is bound to the browser by a short-lived `__Host-`
cookie, so a callback that this browser did not start is refused (login CSRF).
An existing account is linked only after its owner opens a link mailed to its
address: Facebook's word for an email address is not proof of control.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import flask
import pydantic

from orderpally import accounts, clients, web
from orderpally.access import auth_http, facebook, facebook_store, identity_toolkit, limiter
from orderpally.access import guard as access
from orderpally.config import settings

STATE_COOKIE = "__Host-op_fb_state"
STATE_LIFETIME = timedelta(minutes=10)
LINK_LIFETIME = timedelta(minutes=30)


class CallbackQuery(pydantic.BaseModel):
    # Facebook adds parameters of its own (error_reason, error_description, ...).
    model_config = pydantic.ConfigDict(extra="ignore")

    code: str | None = pydantic.Field(default=None, max_length=2048)
    state: str | None = pydantic.Field(default=None, max_length=200)
    error: str | None = pydantic.Field(default=None, max_length=200)


class LinkQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    token: str = pydantic.Field(min_length=20, max_length=200)


def _enabled() -> None:
    if not settings().facebook_app_id:
        raise web.Problem(404, "facebook-sign-in-disabled", "Not available", "Facebook sign-in is not configured.")


def _landing() -> str:
    return settings().frontend_origins[0] + "/"


def _clear_state(response: flask.Response) -> flask.Response:
    response.delete_cookie(STATE_COOKIE, secure=True, httponly=True, samesite="Lax")
    return response


def start(request: flask.Request) -> flask.Response:
    _enabled()
    state = secrets.token_urlsafe(32)
    target = facebook.dialog_url(settings().facebook_redirect_uri, state)
    response = flask.Response(status=302, headers={"Location": target, "Cache-Control": "no-store"})
    response.set_cookie(
        STATE_COOKIE, state, max_age=int(STATE_LIFETIME.total_seconds()), secure=True, httponly=True, samesite="Lax"
    )
    return response


def _offer_link(request: flask.Request, uid: str, user: facebook.FacebookUser, now: datetime) -> None:
    token = facebook_store.offer_link(clients.firestore_client(), uid, user.id, now + LINK_LIFETIME)
    link = f"{settings().facebook_redirect_uri.rsplit('/', 1)[0]}/link?token={token}"
    auth_http.mail_to(uid, user.email or "", "facebook_link", f"facebook_link:{uid}:{now.isoformat()}", link=link)


def _link_required() -> web.Problem:
    return web.Problem(
        409,
        "facebook-link-required",
        "Confirm by email",
        "An account with this email address exists; open the link we mailed to it to use Facebook sign-in.",
    )


def _new_account(user: facebook.FacebookUser, uid: str, now: datetime) -> tuple[str, bool]:
    """The Facebook user's own account, created unless a concurrent first sign-in did; (uid, created)."""
    from firebase_admin import auth
    from google.api_core.exceptions import AlreadyExists

    try:
        auth.create_user(
            uid=uid, email=user.email, display_name=user.name or None, email_verified=False, app=clients.firebase_app()
        )
    except auth.UidAlreadyExistsError:
        pass
    except auth.EmailAlreadyExistsError:
        if auth_http.uid_for(user.email or "") != uid:  # someone signed up with this address meanwhile
            raise _link_required() from None
    try:
        accounts.create(
            clients.firestore_client(),
            uid,
            {
                "kind": "consumer",
                "display_name": user.name or "Facebook user",
                "email": user.email,
                "language": "zh-TW",
                "status": "active",
                "plan": None,
                "features": [],
                "facebook_id": user.id,
                "created_at": now,
            },
        )
    except AlreadyExists:
        return uid, False
    return uid, True


def callback(request: flask.Request) -> flask.Response:
    _enabled()
    query = web.validate(request.args.to_dict(), CallbackQuery)
    if query.error:
        raise web.Problem(401, "facebook-denied", "Facebook sign-in cancelled", "Facebook did not sign you in.")
    if not query.code or not query.state:
        raise web.Problem(400, "facebook-callback-invalid", "Invalid callback", "The callback lacks code or state.")
    expected = request.cookies.get(STATE_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), query.state.encode()):
        raise web.Problem(
            400,
            "facebook-state-mismatch",
            "Sign-in not started here",
            "Start Facebook sign-in again from this browser.",
        )
    now = datetime.now(UTC)
    try:
        limiter.hit(clients.firestore_client(), auth_http.SIGN_IN_PER_ADDRESS, auth_http.address_key(request), now)
    except limiter.Limited as exc:
        raise access.too_many(exc) from None
    try:
        token = facebook.exchange_code(query.code, settings().facebook_redirect_uri)
        user = facebook.read_user(token, facebook.verify_token(token))
    except facebook.FacebookRefused:
        raise web.Problem(
            401, "facebook-token-rejected", "Facebook sign-in failed", "Facebook did not vouch for this sign-in."
        ) from None
    except facebook.FacebookUnavailable:
        raise web.Problem(
            503,
            "facebook-unavailable",
            "Facebook unavailable",
            "Facebook did not answer; try again shortly.",
            headers={"Retry-After": "30"},
        ) from None
    uid = facebook_store.account_with_facebook_id(clients.firestore_client(), user.id)
    if uid is None:
        own = facebook_store.own_account_id(clients.firestore_client(), user.id, now)
        existing = auth_http.uid_for(user.email) if user.email else None
        if existing and existing != own:
            _offer_link(request, existing, user, now)
            raise _link_required()
        uid, created = _new_account(user, own, now)
        if created:
            auth_http.audit_event(request, uid, "account.created", method="facebook")
    try:
        signed_in = identity_toolkit.sign_in_as(uid)
    except identity_toolkit.WrongCredentials:
        raise auth_http.wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        raise auth_http.identity_unavailable(exc) from None
    return _clear_state(auth_http.start_session(request, signed_in, "facebook", redirect_to=_landing()))


def confirm_link(request: flask.Request) -> flask.Response:
    _enabled()
    query = web.validate(request.args.to_dict(), LinkQuery)
    db = clients.firestore_client()
    now = datetime.now(UTC)
    link = facebook_store.take_link(db, query.token, now)
    if link is None:
        raise web.Problem(410, "facebook-link-expired", "Link expired", "Start Facebook sign-in again for a new link.")
    owner = facebook_store.account_with_facebook_id(db, link["facebook_id"])
    if owner not in (None, link["account_id"]):
        raise web.Problem(
            409, "facebook-already-linked", "Already linked", "This Facebook user signs in to another account."
        )
    facebook_store.link_facebook_id(db, link["account_id"], link["facebook_id"])
    _take_over_from_whoever_was_there(link["account_id"])
    auth_http.audit_event(request, link["account_id"], "facebook.linked")
    try:
        signed_in = identity_toolkit.sign_in_as(link["account_id"])
    except identity_toolkit.WrongCredentials:
        raise auth_http.wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        raise auth_http.identity_unavailable(exc) from None
    return auth_http.start_session(request, signed_in, "facebook", redirect_to=_landing())


def _take_over_from_whoever_was_there(uid: str) -> None:
    """Following the mailed link proves the address. Whoever signed up with it before it was
    proven may not be its owner (a pre-registered address): their password goes and every
    session ends, so only the person who holds the mailbox and the Facebook account stays."""
    from firebase_admin import auth

    from orderpally.access import sessions

    app = clients.firebase_app()
    user = auth.get_user(uid, app=app)
    if not user.email_verified:
        # No way to unset a password: one nobody knows. The owner may set their own by reset.
        auth.update_user(uid, email_verified=True, password=secrets.token_urlsafe(48), app=app)
    sessions.revoke_all(uid)


def back_to_the_frontend_on_error(handler: Callable[[flask.Request], flask.Response]) -> Callable[..., flask.Response]:
    """A browser that arrives from Facebook's dialog or a mailed link and meets a problem is sent
    back to the frontend with its slug (`?sign_in_error=<slug>`), not left on a JSON document;
    any other caller gets the problem itself."""

    @functools.wraps(handler)
    def wrapped(request: flask.Request) -> flask.Response:
        try:
            return handler(request)
        except web.Problem as problem:
            # Either way the state is spent: a new attempt starts over.
            if request.headers.get("Sec-Fetch-Mode") != "navigate":
                return _clear_state(problem.to_response(request.path))
            target = _landing() + "?" + urlencode({"sign_in_error": problem.slug})
            return _clear_state(flask.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"}))

    return wrapped


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/auth/facebook/start", ("GET",), start),
    web.Route("/auth/facebook/callback", ("GET",), back_to_the_frontend_on_error(callback)),
    web.Route("/auth/facebook/link", ("GET",), back_to_the_frontend_on_error(confirm_link)),
)

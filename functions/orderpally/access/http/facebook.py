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
from datetime import timedelta
from urllib.parse import urlencode

import flask
import pydantic

from orderpally import web
from orderpally.access import facebook, service
from orderpally.access import guard as access
from orderpally.access.http import auth as auth_http
from orderpally.access.http import ports
from orderpally.config import settings

STATE_COOKIE = "__Host-op_fb_state"
STATE_LIFETIME = timedelta(minutes=10)


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
    new = service.facebook_sign_in(
        ports(), query.code, settings().facebook_redirect_uri, access.client_address(request)
    )
    return _clear_state(auth_http.serve_session(request, new, redirect_to=_landing()))


def confirm_link(request: flask.Request) -> flask.Response:
    _enabled()
    query = web.validate(request.args.to_dict(), LinkQuery)
    new = service.confirm_facebook_link(ports(), query.token, access.client_address(request))
    return auth_http.serve_session(request, new, redirect_to=_landing())


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

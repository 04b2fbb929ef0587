"""HTTP routes of email sign-in (clauses 1.1, 5.2): sign-up, verification, sign-in, sessions, passwords.

The use cases, and why their answers tell nothing about which addresses are
registered, are access.service's; these handlers parse, call it and set the cookies.
"""

from __future__ import annotations

import re
import secrets

import flask
import pydantic

from orderpally import fields, web
from orderpally.access import guard as access
from orderpally.access import service, sessions
from orderpally.access.http import ports
from orderpally.accounts import AccountKind, Language

MAX_PASSWORD_INPUT = 1024  # bounded before anything hashes it
CSRF_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")


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


def _accepted() -> flask.Response:
    return web.json_response(
        {"status": "accepted", "detail": "If the address can receive mail, a message is on its way."}, 202
    )


def serve_session(request: flask.Request, new: service.NewSession, redirect_to: str | None = None) -> flask.Response:
    """Sets the session cookies on a JSON answer, or on a redirect after a browser round trip."""
    if redirect_to:
        response = flask.Response(status=303, headers={"Location": redirect_to, "Cache-Control": "no-store"})
    else:
        response = web.json_response(new.body)
    sessions.set_cookies(response, new.cookie, new.csrf)
    if new.device_token:  # a password sign-in: this browser is now trusted for the account
        sessions.set_device_cookie(response, new.device_token)
    return response


def sign_up(request: flask.Request) -> flask.Response:
    access.check_origin(request)
    body = web.parse_json(request, SignUpBody)
    service.sign_up(
        ports(), body.email, body.password, body.display_name, body.kind, body.language, access.client_address(request)
    )
    return _accepted()


def resend_verification(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request)
    service.resend_verification(ports(), principal)
    return _accepted()


def sign_in(request: flask.Request) -> flask.Response:
    access.check_origin(request)
    body = web.parse_json(request, SignInBody)
    device_cookie = request.cookies.get(sessions.DEVICE_COOKIE)
    new = service.sign_in(ports(), body.email, body.password, access.client_address(request), device_cookie)
    return serve_session(request, new)


def current_session(request: flask.Request) -> flask.Response:
    """The session, with its CSRF token (a frontend on another origin cannot read the cookie) and
    the address's verification state as Firebase Auth holds it now."""
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("API keys have no session.")
    # Only frontend origins get CORS answers (web.py), so no other site's page can read the token.
    csrf = request.cookies.get(access.CSRF_COOKIE, "")
    fresh = not CSRF_TOKEN_SHAPE.fullmatch(csrf)
    if fresh:  # lost or mangled: a new one, set like at sign-in
        csrf = secrets.token_urlsafe(32)
    response = web.json_response(service.current_session(ports(), principal, csrf))
    response.headers["Cache-Control"] = "no-store"
    if fresh:
        sessions.set_csrf_cookie(response, csrf)
    return response


def sign_out(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("Revoke an API key instead.")
    everywhere = request.path.endswith("/everywhere")
    cookie = request.cookies[access.SESSION_COOKIE]
    service.sign_out(ports(), principal, cookie, everywhere, access.client_address(request))
    response = flask.Response(status=204)
    sessions.clear_cookies(response)
    if everywhere:
        sessions.clear_device_cookie(response)
    return response


def request_password_reset(request: flask.Request) -> flask.Response:
    access.check_origin(request)
    body = web.parse_json(request, ResetBody)
    service.request_password_reset(ports(), body.email, access.client_address(request))
    return _accepted()


def change_password(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "api_key":
        raise access.forbidden("Change the password from a signed-in browser.")
    body = web.parse_json(request, PasswordChangeBody)
    cookie = request.cookies[access.SESSION_COOKIE]
    new = service.change_password(
        ports(), principal, cookie, body.current_password, body.new_password, access.client_address(request)
    )
    return serve_session(request, new)


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

"""Facebook Login, server-side code flow (clause 5.1): exchange the code, verify the token, read the user.

Every Graph call carries `appsecret_proof` (HMAC-SHA256 of the access token
keyed with the app secret), so a stolen token is useless without our secret.
The token is trusted only after `debug_token` says it is valid, was issued to
our app, and has not expired.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pydantic
import requests

from orderpally import fields, web
from orderpally.config import settings


def refused(why: str) -> web.Problem:
    """Facebook (or the user) said no: the code or token is not good. The client's problem;
    `why` is for the traceback only, the answer is the same whatever it is."""
    problem = web.Problem(
        401, "facebook-token-rejected", "Facebook sign-in failed", "Facebook did not vouch for this sign-in."
    )
    problem.add_note(why)
    return problem


class FacebookUnavailable(Exception):
    """Facebook did not answer usefully in time. Nobody's input: try again later."""


@dataclass(frozen=True)
class FacebookUser:
    id: str
    name: str
    email: str | None


def _app_secret() -> bytes:
    return settings().secret("FACEBOOK_APP_SECRET")


def appsecret_proof(token: str) -> str:
    return hmac.new(_app_secret(), token.encode(), hashlib.sha256).hexdigest()


def dialog_url(redirect_uri: str, state: str) -> str:
    cfg = settings()
    query = {
        "client_id": cfg.facebook_app_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "response_type": "code",
        "scope": "email,public_profile",
    }
    return f"{cfg.facebook_dialog_url}?{urlencode(query)}"


def _get(path: str, params: dict[str, str]) -> dict[str, Any]:
    cfg = settings()
    try:
        response = requests.get(f"{cfg.facebook_graph_url}{path}", params=params, timeout=cfg.facebook_timeout_seconds)
        body = response.json()
    except requests.RequestException:
        raise FacebookUnavailable(path) from None
    except ValueError:
        raise FacebookUnavailable(f"{path}: not JSON") from None
    if not isinstance(body, dict):
        raise FacebookUnavailable(f"{path}: unexpected body")
    if response.status_code == 400 or "error" in body:
        raise refused(f"{path}: {(body.get('error') or {}).get('type', 'error')!s}")
    if response.status_code >= 300:
        raise FacebookUnavailable(f"{path}: HTTP {response.status_code}")
    return body


def exchange_code(code: str, redirect_uri: str) -> str:
    cfg = settings()
    body = _get(
        "/oauth/access_token",
        {
            "client_id": cfg.facebook_app_id,
            "client_secret": _app_secret().decode(),
            "redirect_uri": redirect_uri,
            "code": code,
        },
    )
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise FacebookUnavailable("no access_token in the answer")
    return token


def verify_token(user_token: str, now: float | None = None) -> str:
    """The Facebook user id the token belongs to, once debug_token vouches for it."""
    cfg = settings()
    app_token = f"{cfg.facebook_app_id}|{_app_secret().decode()}"
    data = _get(
        "/debug_token",
        {"input_token": user_token, "access_token": app_token, "appsecret_proof": appsecret_proof(app_token)},
    ).get("data")
    if not isinstance(data, dict):
        raise FacebookUnavailable("debug_token without data")
    check_token_data(data, cfg.facebook_app_id, time.time() if now is None else now)
    return str(data["user_id"])


def check_token_data(data: dict[str, Any], app_id: str, now: float) -> None:
    """The rules for trusting a user token, on debug_token's answer."""
    if data.get("is_valid") is not True:
        raise refused("token not valid")
    if str(data.get("app_id")) != app_id:
        raise refused("token issued to another app")
    expires_at = data.get("expires_at")
    # 0 means a token that does not expire; anything else is a Unix time.
    if not isinstance(expires_at, int) or (expires_at != 0 and expires_at <= now):
        raise refused("token expired")
    if not str(data.get("user_id") or "").isdigit():
        raise refused("token without a user")


def read_user(user_token: str, expected_id: str) -> FacebookUser:
    body = _get(
        "/me", {"fields": "id,name,email", "access_token": user_token, "appsecret_proof": appsecret_proof(user_token)}
    )
    if str(body.get("id")) != expected_id:
        raise refused("profile does not match the token")
    return FacebookUser(id=expected_id, name=str(body.get("name") or "")[:100], email=_usable_email(body.get("email")))


_MAIL_ADDRESS = pydantic.TypeAdapter(fields.MailAddress)


def _usable_email(raw: object) -> str | None:
    """Facebook's email, if it is one we can mail; otherwise the user is treated as having none."""
    if not isinstance(raw, str):
        return None
    try:
        return _MAIL_ADDRESS.validate_python(raw.strip()).lower()
    except pydantic.ValidationError:
        return None

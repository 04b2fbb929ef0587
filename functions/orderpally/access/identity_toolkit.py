"""Identity Platform's REST API for what firebase-admin does not do: checking a password.

Sign-in happens server-side so the browser never holds a refresh token: the
ID token obtained here is exchanged at once for a session cookie.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orderpally import structured_logging
from orderpally.config import settings

if TYPE_CHECKING:
    import requests
    from firebase_admin import App

TIMEOUT_SECONDS = 10.0


class WrongCredentials(Exception):
    """Unknown email, wrong password or a disabled user: indistinguishable to the caller."""


class UserDisabled(WrongCredentials):
    pass


class IdentityUnavailable(Exception):
    """Identity Platform did not answer usefully; the caller may retry."""


class IdentityMisconfigured(IdentityUnavailable):
    """Identity Platform refused this service, not the user: a bad or restricted API key, sign-in
    method or project not configured. Nothing the user typed was checked."""


# The only answers that are about the user's credentials. Every other 400 (API key not valid,
# CONFIGURATION_NOT_FOUND, OPERATION_NOT_ALLOWED, INVALID_CUSTOM_TOKEN, ...) is ours to fix.
CREDENTIAL_ERRORS = frozenset(
    {
        "EMAIL_NOT_FOUND",
        "INVALID_PASSWORD",
        "INVALID_LOGIN_CREDENTIALS",
        "INVALID_EMAIL",
        "MISSING_PASSWORD",
        "USER_NOT_FOUND",
        "USER_DISABLED",
        "TOO_MANY_ATTEMPTS_TRY_LATER",
    }
)

ALERT_MISCONFIGURED = "identity-misconfigured"
_log = structured_logging.get_logger("orderpally.access")


@dataclass(frozen=True)
class SignedIn:
    uid: str
    id_token: str


def _post(method: str, body: dict) -> dict:
    import requests  # only the auth function calls Identity Toolkit; the others skip its import

    cfg = settings()
    url = f"{cfg.identity_toolkit_url}/v1/accounts:{method}"
    try:
        response = requests.post(url, params={"key": cfg.firebase_web_api_key}, json=body, timeout=TIMEOUT_SECONDS)
    except requests.RequestException:
        raise IdentityUnavailable(method) from None
    if response.status_code in (400, 401, 403):
        code = _error_code(response)
        if response.status_code == 400 and code == "USER_DISABLED":
            raise UserDisabled(code)
        if response.status_code == 400 and code in CREDENTIAL_ERRORS:
            raise WrongCredentials(code)
        structured_logging.log(
            _log,
            logging.ERROR,
            "Identity Platform refused this service's request",
            alert=ALERT_MISCONFIGURED,
            method=method,
            status=response.status_code,
            reason=code[:80],
        )
        raise IdentityMisconfigured(f"{method}: HTTP {response.status_code} {code[:80]}")
    if response.status_code >= 300:
        raise IdentityUnavailable(f"{method}: HTTP {response.status_code}")
    return response.json()


def _error_code(response: requests.Response) -> str:
    """`INVALID_PASSWORD` from `INVALID_PASSWORD : ...`; Google's own errors (a bad API key) by their reason."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return ""
    if not isinstance(error, dict):
        return ""
    own = re.fullmatch(r"([A-Z][A-Z0-9_]*)(\s*:.*)?", str(error.get("message", "")).strip(), flags=re.DOTALL)
    if own:
        return own.group(1)
    for detail in error.get("details") or []:  # "API key not valid. ..." carries reason API_KEY_INVALID
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return str(error.get("status") or "UNKNOWN")


def sign_in_with_password(email: str, password: str) -> SignedIn:
    data = _post("signInWithPassword", {"email": email, "password": password, "returnSecureToken": True})
    return SignedIn(uid=data["localId"], id_token=data["idToken"])


def sign_in_as(app: App, uid: str) -> SignedIn:
    """An ID token for a user this service has authenticated itself (a custom token of `app`, exchanged)."""
    from firebase_admin import auth

    token = auth.create_custom_token(uid, app=app).decode()
    data = _post("signInWithCustomToken", {"token": token, "returnSecureToken": True})
    return SignedIn(uid=uid, id_token=data["idToken"])


@dataclass(frozen=True)
class IdentityToolkit:
    """The adapter access.service is handed: sign-ins through Identity Platform for one Firebase app."""

    app: App

    def sign_in_with_password(self, email: str, password: str) -> SignedIn:
        return sign_in_with_password(email, password)

    def sign_in_as(self, uid: str) -> SignedIn:
        return sign_in_as(self.app, uid)

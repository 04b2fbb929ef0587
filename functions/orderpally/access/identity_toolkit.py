"""Identity Platform's REST API for what firebase-admin does not do: checking a password.

Sign-in happens server-side so the browser never holds a refresh token: the
ID token obtained here is exchanged at once for a session cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from orderpally.config import settings

TIMEOUT_SECONDS = 10.0


class WrongCredentials(Exception):
    """Unknown email, wrong password or a disabled user: indistinguishable to the caller."""


class UserDisabled(WrongCredentials):
    pass


class IdentityUnavailable(Exception):
    """Identity Platform did not answer usefully; the caller may retry."""


@dataclass(frozen=True)
class SignedIn:
    uid: str
    id_token: str


def _post(method: str, body: dict) -> dict:
    cfg = settings()
    url = f"{cfg.identity_toolkit_url}/v1/accounts:{method}"
    try:
        response = requests.post(url, params={"key": cfg.firebase_web_api_key}, json=body, timeout=TIMEOUT_SECONDS)
    except requests.RequestException:
        raise IdentityUnavailable(method) from None
    if response.status_code == 400:
        message = str((response.json().get("error") or {}).get("message", ""))
        if message.startswith("USER_DISABLED"):
            raise UserDisabled(message)
        raise WrongCredentials(message.split(" ")[0])
    if response.status_code >= 300:
        raise IdentityUnavailable(f"{method}: HTTP {response.status_code}")
    return response.json()


def sign_in_with_password(email: str, password: str) -> SignedIn:
    data = _post("signInWithPassword", {"email": email, "password": password, "returnSecureToken": True})
    return SignedIn(uid=data["localId"], id_token=data["idToken"])


def sign_in_as(uid: str) -> SignedIn:
    """An ID token for a user this service has authenticated itself (a custom token, exchanged)."""
    from firebase_admin import auth

    from orderpally import clients

    token = auth.create_custom_token(uid, app=clients.firebase_app()).decode()
    data = _post("signInWithCustomToken", {"token": token, "returnSecureToken": True})
    return SignedIn(uid=uid, id_token=data["idToken"])

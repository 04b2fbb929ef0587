"""Browser sessions: Firebase session cookies minted from an ID token, and their revocation.

Firebase revokes all of a user's sessions at once (revoke_refresh_tokens). One
session (sign-out in one browser) is revoked by listing its cookie's digest in
`revoked_sessions` (access.store) until the cookie would have expired anyway (TTL on `expire_at`).

A browser that signed in to an account with its password gets a device cookie
(OWASP's "device cookies"): a MAC over the address, the issue time and a nonce,
so it names no one and cannot be forged or moved to another account. It only
spares that browser the per-account lockout that strangers' guesses can trigger;
the password is still checked, under a per-device limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import flask

from orderpally.access import store
from orderpally.config import settings

if TYPE_CHECKING:
    from firebase_admin import App
    from google.cloud.firestore import Client

SESSION_COOKIE = "__Host-op_session"
CSRF_COOKIE = "__Host-op_csrf"


def mint(app: App, id_token: str) -> str:
    """A session cookie for a freshly obtained ID token (Firebase requires a recent sign-in)."""
    from firebase_admin import auth

    lifetime = timedelta(seconds=settings().session_lifetime_seconds)
    return auth.create_session_cookie(id_token, expires_in=lifetime, app=app)


def set_cookies(response: flask.Response, session_cookie: str, csrf: str) -> None:
    """Sets the session and its double-submit CSRF token (a fresh one per session)."""
    max_age = settings().session_lifetime_seconds
    response.set_cookie(SESSION_COOKIE, session_cookie, max_age=max_age, secure=True, httponly=True, samesite="Lax")
    set_csrf_cookie(response, csrf)


def set_csrf_cookie(response: flask.Response, csrf: str) -> None:
    # Readable by the frontend's script (it echoes it in X-CSRF-Token), so not HttpOnly.
    max_age = settings().session_lifetime_seconds
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, secure=True, httponly=False, samesite="Lax")


def clear_cookies(response: flask.Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, secure=True, samesite="Lax")


DEVICE_COOKIE = "__Host-op_device"
DEVICE_LIFETIME = timedelta(days=30)
# Domain separation: the device MAC key is derived from the API-key pepper, never the pepper itself.
_DEVICE_KEY_LABEL = b"orderpally device cookie v1"
_DEVICE_TOKEN = re.compile(r"v1\.([0-9]{1,12})\.([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})")
_CLOCK_SKEW = 60


@dataclass(frozen=True)
class Device:
    """A browser that has signed in to the account before; `nonce` keys its own failure counter."""

    nonce: str
    issued_at: int


def _device_mac(secret: bytes, email: str, issued_at: int, nonce: str) -> str:
    key = hmac.new(secret, _DEVICE_KEY_LABEL, hashlib.sha256).digest()
    mac = hmac.new(key, f"{email}\x00{issued_at}\x00{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def device_token(secret: bytes, email: str, now: datetime, nonce: str | None = None) -> str:
    """A device cookie's value for `email` (normalised), issued `now`."""
    issued_at = int(now.timestamp())
    nonce = nonce or secrets.token_urlsafe(18)
    return f"v1.{issued_at}.{nonce}.{_device_mac(secret, email, issued_at, nonce)}"


def read_device(secret: bytes, token: str, email: str, now: datetime) -> Device | None:
    """The device the token proves for `email`, or None: malformed, forged, for another account,
    expired, or from the future. Revocation (`device_revoked`) needs the account and is separate."""
    match = _DEVICE_TOKEN.fullmatch(token or "")
    if not match:
        return None
    issued_at, nonce, mac = int(match.group(1)), match.group(2), match.group(3)
    if not hmac.compare_digest(mac, _device_mac(secret, email, issued_at, nonce)):
        return None
    age = now.timestamp() - issued_at
    if age < -_CLOCK_SKEW or age >= DEVICE_LIFETIME.total_seconds():
        return None
    return Device(nonce=nonce, issued_at=issued_at)


def device_revoked(device: Device, tokens_valid_after_ms: int | None) -> bool:
    """Ended by "sign out everywhere" or a password change: both move Firebase's
    tokens-valid-after time past the moment the device cookie was issued."""
    return tokens_valid_after_ms is not None and device.issued_at * 1000 < tokens_valid_after_ms


def set_device_cookie(response: flask.Response, token: str) -> None:
    max_age = int(DEVICE_LIFETIME.total_seconds())
    response.set_cookie(DEVICE_COOKIE, token, max_age=max_age, secure=True, httponly=True, samesite="Lax")


def clear_device_cookie(response: flask.Response) -> None:
    response.delete_cookie(DEVICE_COOKIE, secure=True, httponly=True, samesite="Lax")


def revoke_one(db: Client, cookie: str, now: datetime) -> None:
    """Ends the session in this browser: listed as signed out until it would have expired anyway."""
    lifetime = timedelta(seconds=settings().session_lifetime_seconds)
    store.revoke_session(db, store.session_digest(cookie), now, now + lifetime)


def revoke_all(app: App, uid: str) -> None:
    """Ends every session of the user, those opened in the revocation's own second included.

    Firebase keeps the revocation in whole seconds and spares a session issued in that
    second, which may have been opened a moment before it with the privileges being taken
    away. So it revokes again once the next second has begun: every session issued before
    then has ended, and one minted after this returns is valid.
    """
    from firebase_admin import auth

    auth.revoke_refresh_tokens(uid, app=app)
    time.sleep(1.02 - time.time() % 1)
    auth.revoke_refresh_tokens(uid, app=app)

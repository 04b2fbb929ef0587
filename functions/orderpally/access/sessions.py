"""Browser sessions: Firebase session cookies minted from an ID token, and their revocation.

Firebase revokes all of a user's sessions at once (revoke_refresh_tokens). One
session (sign-out in one browser) is revoked by listing its cookie's digest in
`revoked_sessions` until the cookie would have expired anyway (TTL on `expire_at`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import flask

from orderpally import clients
from orderpally.access.http import CSRF_COOKIE, REVOKED_SESSIONS, SESSION_COOKIE, session_digest
from orderpally.config import settings


def mint(id_token: str) -> str:
    """A session cookie for a freshly obtained ID token (Firebase requires a recent sign-in)."""
    from firebase_admin import auth

    lifetime = timedelta(seconds=settings().session_lifetime_seconds)
    return auth.create_session_cookie(id_token, expires_in=lifetime, app=clients.firebase_app())


def set_cookies(response: flask.Response, session_cookie: str, csrf: str) -> None:
    """Sets the session and its double-submit CSRF token (a fresh one per session)."""
    max_age = settings().session_lifetime_seconds
    response.set_cookie(SESSION_COOKIE, session_cookie, max_age=max_age, secure=True, httponly=True, samesite="Lax")
    # Readable by the frontend's script (it echoes it in X-CSRF-Token), so not HttpOnly.
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, secure=True, httponly=False, samesite="Lax")


def clear_cookies(response: flask.Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, secure=True, samesite="Lax")


def revoke_one(db: Any, cookie: str, now: datetime) -> None:
    lifetime = timedelta(seconds=settings().session_lifetime_seconds)
    db.collection(REVOKED_SESSIONS).document(session_digest(cookie)).set(
        {"revoked_at": now, "expire_at": now + lifetime}
    )


def revoke_all(uid: str) -> None:
    """Ends every session of the user, those opened in the revocation's own second included.

    Firebase keeps the revocation in whole seconds and spares a session issued in that
    second, which may have been opened a moment before it with the privileges being taken
    away. So it revokes again once the next second has begun: every session issued before
    then has ended, and one minted after this returns is valid.
    """
    from firebase_admin import auth

    auth.revoke_refresh_tokens(uid, app=clients.firebase_app())
    time.sleep(1.02 - time.time() % 1)
    auth.revoke_refresh_tokens(uid, app=clients.firebase_app())

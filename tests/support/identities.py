"""Real users in the Auth emulator, and real session cookies for them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

import requests

from orderpally import clients

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Identity:
    uid: str
    email: str
    session_cookie: str


def id_token(email: str, password: str = PASSWORD) -> str:
    """Signs in through the Auth emulator's Identity Toolkit REST API, as a frontend would."""
    host = os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
    response = requests.post(
        f"http://{host}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=emulator",
        json={"email": email, "password": password, "returnSecureToken": True},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["idToken"]


def create_identity(*, roles: list[str] | None = None, verified: bool = True, uid: str | None = None) -> Identity:
    from firebase_admin import auth

    uid = uid or f"u-{uuid.uuid4().hex[:12]}"
    email = f"{uid}@example.com"
    auth.create_user(uid=uid, email=email, password=PASSWORD, email_verified=verified, app=clients.firebase_app())
    if roles:
        auth.set_custom_user_claims(uid, {"roles": roles}, app=clients.firebase_app())
    cookie = auth.create_session_cookie(id_token(email), timedelta(hours=1), app=clients.firebase_app())
    return Identity(uid=uid, email=email, session_cookie=cookie)


FRONTEND_ORIGIN = "http://localhost:3000"


def browser_headers(identity: Identity, csrf: str = "csrf-token-for-tests") -> dict[str, str]:
    """What a browser on the frontend sends: the session and CSRF cookies, Origin, and the echoed token."""
    return {
        "Cookie": f"__Host-op_session={identity.session_cookie}; __Host-op_csrf={csrf}",
        "Origin": FRONTEND_ORIGIN,
        "X-CSRF-Token": csrf,
    }


def create_customer(kind: str = "store", verified: bool = True, language: str = "zh-TW") -> Identity:
    """A customer with an account document, as sign-up leaves one."""
    identity = create_identity(verified=verified)
    clients.firestore_client().document(f"accounts/{identity.uid}").set(
        {"kind": kind, "email": identity.email, "display_name": identity.uid, "language": language, "status": "active"}
    )
    return identity

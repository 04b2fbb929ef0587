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
    email = f"{uid}@example.test"
    auth.create_user(uid=uid, email=email, password=PASSWORD, email_verified=verified, app=clients.firebase_app())
    if roles:
        auth.set_custom_user_claims(uid, {"roles": roles}, app=clients.firebase_app())
    cookie = auth.create_session_cookie(id_token(email), timedelta(hours=1), app=clients.firebase_app())
    return Identity(uid=uid, email=email, session_cookie=cookie)

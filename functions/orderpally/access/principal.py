"""Callers: who is behind a request, as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

STAFF_ROLES = frozenset({"support", "security", "admin"})

Kind = Literal["customer", "staff", "api_key"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `account_id` is the Firebase uid of the customer (or staff member) behind
    the call; an API key acts for the account that created it, within scopes.
    """

    kind: Kind
    account_id: str
    email_verified: bool = False
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] | None = None  # None: a session, which is not scope-limited
    credential_id: str | None = None  # the API key id, for audit and revocation
    session_issued_at: int | None = None  # auth_time of the session, for re-authentication checks
    # Signed in through Facebook (our custom token): the identity is proven without an address.
    facebook_proven: bool = False

    @property
    def identity_proven(self) -> bool:
        """A verified address, or a Facebook sign-in: what actions that commit the account need."""
        return self.email_verified or self.facebook_proven

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


def roles_from_claims(claims: dict) -> frozenset[str]:
    """Staff roles from Firebase custom claims; unknown role names are ignored."""
    raw = claims.get("roles") or []
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(r for r in raw if isinstance(r, str)) & STAFF_ROLES

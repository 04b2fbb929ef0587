"""Staff roles (Firebase custom claims), changed by an admin over HTTP or by an operator's CLI.

A role change is a privilege change, and its audit entry must survive a crash between
Firebase Authentication and Firestore, which cannot commit together. So the request is
written to the user's trail first (`staff.roles_change_requested`), then the claims are
set and the user's sessions ended, then the outcome (`staff.roles_changed`). A request
without an outcome is an attempt whose result the user's claims show.
"""

from __future__ import annotations

from typing import Any

from orderpally import audit, clients, events
from orderpally.access import sessions

FAULTS = "staff_roles"  # the fault suite's crash point between the change and its outcome entry


class RolesRefused(Exception):
    """The user may not hold staff roles; `detail` says why."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


def change_roles(user: Any, roles: list[str], actor: audit.Actor, reason: str, client_address: str | None) -> None:
    """Sets `user`'s (a firebase_admin UserRecord) staff roles, audited before and after.

    Roles go only to a user whose address is proven: anyone can sign up with the address
    meant for a new admin before its owner does, and an unverified account is theirs.
    """
    from firebase_admin import auth

    if roles and (not user.email or not user.email_verified):
        raise RolesRefused(
            "staff-address-unverified", "Staff roles go only to an account whose email address is verified."
        )
    if roles and user.disabled:
        raise RolesRefused("staff-account-disabled", "Staff roles do not go to a disabled account.")
    details = {"roles": roles}
    audit.record(user.uid, audit.AuditEvent("staff.roles_change_requested", actor, client_address, reason, details))
    claims = dict(user.custom_claims or {})
    claims["roles"] = roles
    auth.set_custom_user_claims(user.uid, claims, app=clients.firebase_app())
    events.inject_fault(FAULTS, "after-change")
    # Sessions carry the roles they were minted with: end them so the change applies at once.
    sessions.revoke_all(user.uid)
    audit.record(user.uid, audit.AuditEvent("staff.roles_changed", actor, client_address, reason, details))

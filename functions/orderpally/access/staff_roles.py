"""Staff roles (Firebase custom claims), changed by an admin over HTTP or by an operator's CLI.

A role change is a privilege change, and its audit entry must survive a crash between
Firebase Authentication and Firestore, which cannot commit together. So the request is
written to the user's trail first (`staff.roles_change_requested`), then the claims are
set and the user's sessions ended, then the outcome (`staff.roles_changed`). A request
without an outcome is an attempt whose result the user's claims show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderpally import audit, events, web
from orderpally.access import sessions

if TYPE_CHECKING:
    from firebase_admin import App
    from google.cloud.firestore import Client

FAULTS = "staff_roles"  # the fault suite's crash point between the change and its outcome entry


def refused(slug: str, detail: str) -> web.Problem:
    """The user may not hold staff roles; `detail` says why (the CLI prints it)."""
    return web.Problem(409, slug, "Not possible", detail)


def change_roles(
    db: Client, app: App, user: Any, roles: list[str], actor: audit.Actor, reason: str, client_address: str | None
) -> None:
    """Sets `user`'s (a firebase_admin UserRecord of `app`) staff roles, audited before and after.

    Roles go only to a user whose address is proven: anyone can sign up with the address
    meant for a new admin before its owner does, and an unverified account is theirs.
    """
    from firebase_admin import auth

    if roles and (not user.email or not user.email_verified):
        raise refused("staff-address-unverified", "Staff roles go only to an account whose email address is verified.")
    if roles and user.disabled:
        raise refused("staff-account-disabled", "Staff roles do not go to a disabled account.")
    details = {"roles": roles}
    audit.record(db, user.uid, audit.AuditEvent("staff.roles_change_requested", actor, client_address, reason, details))
    claims = dict(user.custom_claims or {})
    claims["roles"] = roles
    auth.set_custom_user_claims(user.uid, claims, app=app)
    events.inject_fault(db, FAULTS, "after-change")
    # Sessions carry the roles they were minted with: end them so the change applies at once.
    sessions.revoke_all(app, user.uid)
    audit.record(db, user.uid, audit.AuditEvent("staff.roles_changed", actor, client_address, reason, details))

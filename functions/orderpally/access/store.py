"""Access's Firestore: signed-out sessions, API keys, and Facebook sign-in.

`revoked_sessions/{sha256(cookie)}`   a session signed out in one browser, until it would expire
`api_keys/{key id}`                   a key's keyed hash, scopes, expiry, revocation and last use
`facebook_identities/{sha256("facebook:" + id)}`  the account id a Facebook user's own account
    gets (random, so a returning user gets a new account after a deletion)
`facebook_links/{sha256(token)}`      a mailed link joining a Facebook user to an existing
    account, until it is used or expires

The accounts themselves are `orderpally.accounts`', the rate-limit counters `orderpally.limiter`'s;
the audit trail is `orderpally.audit`'s, queried here through its own accessors.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orderpally import unit_of_work

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from orderpally import audit, outbox

REVOKED_SESSIONS = "revoked_sessions"
API_KEYS = "api_keys"
FACEBOOK_LINKS = "facebook_links"
FACEBOOK_IDENTITIES = "facebook_identities"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_digest(cookie: str) -> str:
    """What a session is known by where it is stored or counted: never the cookie itself."""
    return _digest(cookie)


# --- sessions signed out in one browser -----------------------------------------------


def revoke_session(db: Client, digest: str, now: datetime, expire_at: datetime) -> None:
    db.collection(REVOKED_SESSIONS).document(digest).set({"revoked_at": now, "expire_at": expire_at})


def session_revoked(db: Client, digest: str) -> bool:
    return bool(db.collection(REVOKED_SESSIONS).document(digest).get().exists)


# --- API keys ---------------------------------------------------------------------------


def active_keys(db: Client, account_id: str, now: datetime) -> int:
    """How many of the account's keys are neither revoked nor expired."""
    from google.cloud import firestore

    query = (
        db.collection(API_KEYS)
        .where(filter=firestore.FieldFilter("account_id", "==", account_id))
        .where(filter=firestore.FieldFilter("revoked_at", "==", None))
    )
    return sum(1 for snap in query.stream() if snap.get("expires_at") > now)


def add_key(db: Client, key_id: str, record: dict[str, Any]) -> None:
    db.collection(API_KEYS).document(key_id).create(record)


def discard_key(db: Client, key_id: str) -> None:
    db.collection(API_KEYS).document(key_id).delete()


def key(db: Client, key_id: str) -> dict[str, Any] | None:
    return db.collection(API_KEYS).document(key_id).get().to_dict()


def note_key_use(db: Client, key_id: str, update: dict[str, Any]) -> None:
    db.collection(API_KEYS).document(key_id).update(update)


def keys_of(db: Client, account_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The account's keys, revoked and expired ones included: (key id, stored record)."""
    from google.cloud import firestore

    snaps = db.collection(API_KEYS).where(filter=firestore.FieldFilter("account_id", "==", account_id)).get()
    return [(snap.id, snap.to_dict() or {}) for snap in snaps]


def revoke_key(
    db: Client, account_id: str, key_id: str, now: datetime, event: audit.AuditEvent
) -> tuple[bool, outbox.Staged | None]:
    """Revokes the account's own key, with `event` staged once however often it is asked: whether
    it has such a key (another's is 'no such key' too), and the entry to announce when this call
    revoked it. Many revocations at once (a double click, several tabs) all answer: the key is
    written only as it was read."""
    from orderpally import outbox

    ref = db.collection(API_KEYS).document(key_id)
    staged: list[outbox.Staged] = []

    def decide(snapshot: Any) -> tuple[bool, Any]:
        if not snapshot.exists or snapshot.get("account_id") != account_id:
            return False, None
        if snapshot.get("revoked_at") is not None:
            return True, None

        def write(batch: Any, unchanged: Any) -> None:
            batch.update(ref, {"revoked_at": now}, option=unchanged)
            staged[:] = [outbox.stage(batch, db, account_id, event, None, now)]

        return True, write

    found = unit_of_work.if_unchanged(db, ref, decide)
    return found, (staged[0] if staged else None)


def revoke_all_keys(db: Client, account_id: str, now: datetime) -> int:
    from google.cloud import firestore

    snaps = (
        db.collection(API_KEYS)
        .where(filter=firestore.FieldFilter("account_id", "==", account_id))
        .where(filter=firestore.FieldFilter("revoked_at", "==", None))
        .get()
    )
    for snap in snaps:
        snap.reference.update({"revoked_at": now})
    return len(snaps)


# --- the audit trail, read for its customer -------------------------------------------


def trail_entries_with_action(db: Client, account_id: str, action: str) -> list[dict[str, Any]]:
    """Every entry of the account's trail (`orderpally.audit`'s) with this action, newest first,
    once whatever is pending is linked: one equality query on the trail's single-field index,
    so a rare action is found without reading the whole trail."""
    from google.cloud.firestore import FieldFilter

    from orderpally import audit

    audit.settle(audit.account_chain(db, account_id))
    query = audit.trail(db, account_id).where(filter=FieldFilter("action", "==", action))
    return sorted((snap.to_dict() or {} for snap in query.stream()), key=lambda e: e.get("seq", 0), reverse=True)


# --- Facebook sign-in -------------------------------------------------------------------


def own_account_id(db: Client, facebook_id: str, now: datetime) -> str:
    """The account id for a Facebook user's own account: one per identity while its account
    lives, so concurrent first sign-ins make one account; a new one once that account has been
    deleted (the deletion removes this record), so nothing of the old account (its termination,
    deletion job, certificate, holds) ever applies to the new one."""
    from google.api_core.exceptions import AlreadyExists

    ref = db.collection(FACEBOOK_IDENTITIES).document(_digest(f"facebook:{facebook_id}"))
    with contextlib.suppress(AlreadyExists):
        ref.create({"account_id": "fb-" + secrets.token_hex(20), "created_at": now})
    return str(ref.get().get("account_id"))


def offer_link(db: Client, account_id: str, facebook_id: str, expire_at: datetime) -> str:
    """A new one-use link token joining `facebook_id` to the account; only its digest is kept."""
    token = secrets.token_urlsafe(32)
    db.collection(FACEBOOK_LINKS).document(_digest(token)).set(
        {"account_id": account_id, "facebook_id": facebook_id, "expire_at": expire_at}
    )
    return token


def take_link(db: Client, token: str, now: datetime) -> dict[str, Any] | None:
    """The link the token names, deleted in the same transaction: it works once. None for an
    unknown, used or expired token."""
    from google.cloud import firestore

    ref = db.collection(FACEBOOK_LINKS).document(_digest(token))

    @firestore.transactional
    def take(transaction: firestore.Transaction) -> dict | None:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists:
            return None
        transaction.delete(ref)
        return snapshot.to_dict()

    link = take(db.transaction())
    return link if link is not None and link["expire_at"] > now else None

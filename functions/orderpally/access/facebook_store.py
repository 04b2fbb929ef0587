"""The Firestore side of Facebook sign-in: which account a Facebook user owns, and the
one-use links that join a Facebook user to an existing email account.

`facebook_identities/{sha256("facebook:" + id)}` names the account id a Facebook user's own
account gets (random, so a returning user gets a new account after a deletion);
`facebook_links/{sha256(token)}` holds a mailed link until it is used or expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import datetime
from typing import Any

from orderpally.accounts import ACCOUNTS

LINKS = "facebook_links"
FACEBOOK_IDENTITIES = "facebook_identities"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def account_with_facebook_id(db: Any, facebook_id: str) -> str | None:
    """The account this Facebook user signs in to, if any has been linked or created."""
    from google.cloud import firestore

    query = db.collection(ACCOUNTS).where(filter=firestore.FieldFilter("facebook_id", "==", facebook_id))
    found = query.limit(1).get()
    return found[0].id if found else None


def link_facebook_id(db: Any, account_id: str, facebook_id: str) -> None:
    db.collection(ACCOUNTS).document(account_id).update({"facebook_id": facebook_id})


def own_account_id(db: Any, facebook_id: str, now: datetime) -> str:
    """The account id for a Facebook user's own account: one per identity while its account
    lives, so concurrent first sign-ins make one account; a new one once that account has been
    deleted (the deletion removes this record), so nothing of the old account (its termination,
    deletion job, certificate, holds) ever applies to the new one."""
    from google.api_core.exceptions import AlreadyExists

    ref = db.collection(FACEBOOK_IDENTITIES).document(_digest(f"facebook:{facebook_id}"))
    with contextlib.suppress(AlreadyExists):
        ref.create({"account_id": "fb-" + secrets.token_hex(20), "created_at": now})
    return str(ref.get().get("account_id"))


def offer_link(db: Any, account_id: str, facebook_id: str, expire_at: datetime) -> str:
    """A new one-use link token joining `facebook_id` to the account; only its digest is kept."""
    token = secrets.token_urlsafe(32)
    db.collection(LINKS).document(_digest(token)).set(
        {"account_id": account_id, "facebook_id": facebook_id, "expire_at": expire_at}
    )
    return token


def take_link(db: Any, token: str, now: datetime) -> dict[str, Any] | None:
    """The link the token names, deleted in the same transaction: it works once. None for an
    unknown, used or expired token."""
    from google.cloud import firestore

    ref = db.collection(LINKS).document(_digest(token))

    @firestore.transactional
    def take(transaction: firestore.Transaction) -> dict | None:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists:
            return None
        transaction.delete(ref)
        return snapshot.to_dict()

    link = take(db.transaction())
    return link if link is not None and link["expire_at"] > now else None

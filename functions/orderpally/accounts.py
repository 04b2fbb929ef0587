"""The account document: the one record every capability shares.

`accounts/{uid}` (uid = the Firebase Authentication uid):
    kind          "store" | "consumer"
    display_name  str
    email         str (lower-cased)
    language      "zh-TW" | "en"  (the customer's preference for mail and pages)
    status        "active" | "suspended" | "terminating" | "terminated"
    plan          str | None      (stores: the subscribed plan)
    features      list[str]       (features the customer uses; notices target them)
    created_at    timestamp (server)

Sub-collections (each listed in the data map of the lifecycle capability):
    audit_trail/  the append-only audit trail (orderpally.audit)
"""

from __future__ import annotations

from typing import Any, Literal

ACCOUNTS = "accounts"
KINDS = ("store", "consumer")
LANGUAGES = ("zh-TW", "en")
DEFAULT_LANGUAGE = "zh-TW"
STATUSES = ("active", "suspended", "terminating", "terminated")

Language = Literal["zh-TW", "en"]
AccountKind = Literal["store", "consumer"]


def preferred_language(stored: object, fallback: str = DEFAULT_LANGUAGE) -> Language:
    """The stored preference when it is one we write in, else the fallback."""
    for choice in (stored, fallback):
        if choice == "zh-TW" or choice == "en":
            return choice
    return "zh-TW"


def load(db: Any, account_id: str) -> dict[str, Any] | None:
    """The account document, None when there is none (never created, or deleted)."""
    return db.collection(ACCOUNTS).document(account_id).get().to_dict()


def create(db: Any, account_id: str, fields: dict[str, Any], writer: Any = None) -> None:
    """Creates the account document, through `writer` (a batch or transaction) when given;
    fails (AlreadyExists) if there is one."""
    ref = db.collection(ACCOUNTS).document(account_id)
    if writer is None:
        ref.create(fields)
    else:
        writer.create(ref, fields)


def email_of(db: Any, account_id: str) -> str | None:
    """The account's stored address, None when it has none (or no account is left)."""
    return (load(db, account_id) or {}).get("email") or None


def trail_is_open(db: Any, account_id: str) -> bool:
    """May events still be written to the account's trail? Not once it is terminated or its
    profile deleted: a failed sign-in with a deleted address would bring its trail back, with
    a client address, and no job would ever delete it again."""
    snap = db.collection(ACCOUNTS).document(account_id).get()
    return bool(snap.exists and (snap.to_dict() or {}).get("status") != "terminated")


def id_with_facebook_id(db: Any, facebook_id: str) -> str | None:
    """The account a Facebook user signs in to, if one has been linked or created for them."""
    from google.cloud import firestore

    query = db.collection(ACCOUNTS).where(filter=firestore.FieldFilter("facebook_id", "==", facebook_id))
    found = query.limit(1).get()
    return found[0].id if found else None


def link_facebook_id(db: Any, account_id: str, facebook_id: str) -> None:
    """Lets the Facebook user sign in to the account from now on."""
    db.collection(ACCOUNTS).document(account_id).update({"facebook_id": facebook_id})


def load_in(transaction: Any, db: Any, account_id: str) -> dict[str, Any]:
    """The account document read inside `transaction` (so a concurrent change makes it run
    again); empty when there is none."""
    snap = db.collection(ACCOUNTS).document(account_id).get(transaction=transaction)
    return (snap.to_dict() or {}) if snap.exists else {}


def update(db: Any, account_id: str, fields: dict[str, Any], writer: Any = None) -> None:
    """Updates fields of the account document, through `writer` (a batch or transaction) when
    given; fails (NotFound) if there is none."""
    ref = db.collection(ACCOUNTS).document(account_id)
    if writer is None:
        ref.update(fields)
    else:
        writer.update(ref, fields)


def document(db: Any, account_id: str) -> Any:
    """The account document's reference, for the sub-collections kept under it (the audit trail)."""
    return db.collection(ACCOUNTS).document(account_id)


def page_in_id_order(db: Any, after: str | None, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Up to `limit` accounts (id, document) in document-id order, starting after the id `after`:
    a walk over every account that can stop and resume at any page."""
    query = db.collection(ACCOUNTS).order_by("__name__").limit(limit)
    if after:
        query = query.start_after({"__name__": db.collection(ACCOUNTS).document(after)})
    return [(snap.id, snap.to_dict() or {}) for snap in query.get()]


def existing(db: Any, account_ids: list[str], per_read: int = 500) -> list[tuple[str, dict[str, Any]]]:
    """(id, document) of the accounts that exist among `account_ids`, in that order, read
    `per_read` at a time (a few round trips, not one per account)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(account_ids), per_read):
        refs = [db.collection(ACCOUNTS).document(a) for a in account_ids[start : start + per_read]]
        found.update({snap.id: snap.to_dict() or {} for snap in db.get_all(refs) if snap.exists})
    return [(a, found[a]) for a in account_ids if a in found]

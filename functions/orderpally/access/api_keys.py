"""Personal API keys (clause 1.3): shown once, stored only as a keyed hash, scoped, expiring, revocable.

Format: `opk_` + 12-character key id + 30-character secret + 6-character
checksum (CRC32 of the rest, base62), all base62. The fixed prefix and the
checksum let secret scanners find leaked keys with few false positives, and
let a mistyped key be refused without a database read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:  # every API-key request verifies a key; only a revocation needs these
    from orderpally import audit, outbox

API_KEYS = "api_keys"
PREFIX = "opk_"
ID_LENGTH = 12
SECRET_LENGTH = 30
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
Scope = Literal["export:create", "audit:read"]
SCOPES: tuple[str, ...] = get_args(Scope)
MAX_ACTIVE_KEYS = 20
# Writing "last used" on every call would make each request a write; once a minute is enough to see use.
LAST_USED_RESOLUTION = timedelta(minutes=1)
USE_AUDIT_RESOLUTION = timedelta(hours=1)
_ALPHABET = string.digits + string.ascii_letters


class KeyRejected(Exception):
    """Not a valid, current key: the caller gets 401, whatever the reason."""


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def new_key() -> tuple[str, str]:
    """(key id, the whole key)."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))
    body = key_id + secret
    return key_id, PREFIX + body + _checksum(body)


def parse(key: str) -> str:
    """The key id of a well-formed key; KeyRejected for anything else."""
    if len(key) != KEY_LENGTH or not key.isascii() or not key.startswith(PREFIX):
        raise KeyRejected("malformed")
    body, checksum = key[len(PREFIX) : -CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    if any(ch not in _ALPHABET for ch in body) or not hmac.compare_digest(_checksum(body), checksum):
        raise KeyRejected("malformed")
    return body[:ID_LENGTH]


def keyed_hash(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account_id: str
    scopes: frozenset[str]
    needs_last_used: bool
    needs_use_audit: bool


class TooManyKeys(Exception):
    def __init__(self) -> None:
        super().__init__(f"at most {MAX_ACTIVE_KEYS} active keys; revoke one first")


def create(
    db: Any, account_id: str, name: str, scopes: list[str], expires_at: datetime, pepper: bytes, now: datetime
) -> tuple[dict[str, Any], str]:
    """Stores a new key; returns its public record and the key itself (never stored, never shown again)."""
    from google.cloud import firestore

    def active() -> int:
        query = (
            db.collection(API_KEYS)
            .where(filter=firestore.FieldFilter("account_id", "==", account_id))
            .where(filter=firestore.FieldFilter("revoked_at", "==", None))
        )
        return sum(1 for snap in query.stream() if snap.get("expires_at") > now)

    if active() >= MAX_ACTIVE_KEYS:
        raise TooManyKeys()
    key_id, key = new_key()
    record = {
        "account_id": account_id,
        "name": name,
        "scopes": sorted(set(scopes)),
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
        "last_used_at": None,
        "last_used_address": None,
        "last_use_audited_at": None,
        "hash": keyed_hash(key, pepper),
    }
    ref = db.collection(API_KEYS).document(key_id)
    ref.create(record)
    # Counted again with this key in: concurrent creations may all be refused, never all admitted.
    if active() > MAX_ACTIVE_KEYS:
        ref.delete()
        raise TooManyKeys()
    return public(key_id, record), key


def public(key_id: str, record: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at", "last_used_address")
    return {"id": key_id, **{k: record.get(k) for k in keep}}


def verify(db: Any, key: str, pepper: bytes, now: datetime) -> KeyRecord:
    key_id = parse(key)
    snapshot = db.collection(API_KEYS).document(key_id).get()
    if not snapshot.exists:
        raise KeyRejected("unknown")
    record = snapshot.to_dict()
    if not hmac.compare_digest(record["hash"], keyed_hash(key, pepper)):
        raise KeyRejected("unknown")
    if record.get("revoked_at") is not None:
        raise KeyRejected("revoked")
    if record["expires_at"] <= now:
        raise KeyRejected("expired")
    last_used, last_audited = record.get("last_used_at"), record.get("last_use_audited_at")
    return KeyRecord(
        key_id=key_id,
        account_id=record["account_id"],
        scopes=frozenset(record.get("scopes") or ()),
        needs_last_used=last_used is None or now - last_used >= LAST_USED_RESOLUTION,
        needs_use_audit=last_audited is None or now - last_audited >= USE_AUDIT_RESOLUTION,
    )


def note_use(db: Any, record: KeyRecord, address: str | None, now: datetime) -> None:
    update: dict[str, Any] = {"last_used_at": now, "last_used_address": address}
    if record.needs_use_audit:
        update["last_use_audited_at"] = now
    db.collection(API_KEYS).document(record.key_id).update(update)


def owned(db: Any, account_id: str) -> list[dict[str, Any]]:
    from google.cloud import firestore

    snaps = db.collection(API_KEYS).where(filter=firestore.FieldFilter("account_id", "==", account_id)).get()
    return sorted((public(s.id, s.to_dict()) for s in snaps), key=lambda k: k["created_at"], reverse=True)


def revoke(db: Any, account_id: str, key_id: str, now: datetime, event: audit.AuditEvent) -> bool:
    """Revokes the account's own key, audited as `event` once however often it is asked;
    False when it has no such key (another's is 'no such key' too)."""
    from google.cloud import firestore

    from orderpally import outbox

    ref = db.collection(API_KEYS).document(key_id)

    @firestore.transactional
    def write(transaction: Any) -> tuple[bool, outbox.Staged | None]:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists or snapshot.get("account_id") != account_id:
            return False, None
        if snapshot.get("revoked_at") is not None:
            return True, None
        transaction.update(ref, {"revoked_at": now})
        return True, outbox.stage(transaction, db, account_id, event, None, now)

    found, staged = write(db.transaction())
    if staged is not None:
        outbox.announce(db, staged)
    return found


def revoke_all(db: Any, account_id: str, now: datetime) -> int:
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


def discard(db: Any, key_id: str) -> None:
    """Removes a key that was never handed out (its creation failed part-way)."""
    db.collection(API_KEYS).document(key_id).delete()

"""Personal API keys (clause 1.3): shown once, stored only as a keyed hash, scoped, expiring, revocable.

Format: `opk_` + 12-character key id + 30-character secret + 6-character
checksum (CRC32 of the rest, base62), all base62. The fixed prefix and the
checksum let secret scanners find leaked keys with few false positives, and
let a mistyped key be refused without a database read. The records are access.store's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from orderpally import web
from orderpally.access import store
from orderpally.access.refusals import unauthenticated

if TYPE_CHECKING:  # every API-key request verifies a key; only a revocation needs these
    from google.cloud.firestore import Client

    from orderpally import audit
    from orderpally.access.principal import Principal

PREFIX = "opk_"
KEY_ID = re.compile(r"^[0-9A-Za-z]{12}$")
ID_LENGTH = 12
SECRET_LENGTH = 30
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
Scope = Literal["export:create", "audit:read"]
SCOPES: tuple[str, ...] = get_args(Scope)
MAX_ACTIVE_KEYS = 20
# Writing "last used" on every call would make each request a write; once a minute is enough to see use.
# Account statuses whose keys still work (a terminating account may still fetch its data).
KEY_STATUSES = ("active", "terminating")
LAST_USED_RESOLUTION = timedelta(minutes=1)
USE_AUDIT_RESOLUTION = timedelta(hours=1)
_ALPHABET = string.digits + string.ascii_letters


def rejected() -> web.Problem:
    """Not a valid, current key: the caller gets the same 401, whatever the reason."""
    return unauthenticated("The API key is not valid (unknown, revoked or expired).")


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
    """The key id of a well-formed key; the `rejected()` 401 for anything else, without a lookup."""
    if len(key) != KEY_LENGTH or not key.isascii() or not key.startswith(PREFIX):
        raise rejected()
    body, checksum = key[len(PREFIX) : -CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    if any(ch not in _ALPHABET for ch in body) or not hmac.compare_digest(_checksum(body), checksum):
        raise rejected()
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


def too_many_keys() -> web.Problem:
    detail = f"at most {MAX_ACTIVE_KEYS} active keys; revoke one first"
    return web.Problem(409, "too-many-keys", "Too many keys", detail)


def create(
    db: Client, account_id: str, name: str, scopes: list[str], expires_at: datetime, pepper: bytes, now: datetime
) -> tuple[dict[str, Any], str]:
    """Stores a new key; returns its public record and the key itself (never stored, never shown again)."""
    if store.active_keys(db, account_id, now) >= MAX_ACTIVE_KEYS:
        raise too_many_keys()
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
    store.add_key(db, key_id, record)
    # Counted again with this key in: concurrent creations may all be refused, never all admitted.
    if store.active_keys(db, account_id, now) > MAX_ACTIVE_KEYS:
        store.discard_key(db, key_id)
        raise too_many_keys()
    return public(key_id, record), key


def public(key_id: str, record: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at", "last_used_address")
    return {"id": key_id, **{k: record.get(k) for k in keep}}


def verify(db: Client, key: str, pepper: bytes, now: datetime) -> KeyRecord:
    """The current key `key` is; the `rejected()` 401 for an unknown, revoked or expired one."""
    key_id = parse(key)
    record = store.key(db, key_id)
    if record is None or not hmac.compare_digest(record["hash"], keyed_hash(key, pepper)):
        raise rejected()
    if record.get("revoked_at") is not None or record["expires_at"] <= now:
        raise rejected()
    last_used, last_audited = record.get("last_used_at"), record.get("last_use_audited_at")
    return KeyRecord(
        key_id=key_id,
        account_id=record["account_id"],
        scopes=frozenset(record.get("scopes") or ()),
        needs_last_used=last_used is None or now - last_used >= LAST_USED_RESOLUTION,
        needs_use_audit=last_audited is None or now - last_audited >= USE_AUDIT_RESOLUTION,
    )


def note_use(db: Client, record: KeyRecord, address: str | None, now: datetime) -> None:
    update: dict[str, Any] = {"last_used_at": now, "last_used_address": address}
    if record.needs_use_audit:
        update["last_use_audited_at"] = now
    store.note_key_use(db, record.key_id, update)


def principal(db: Client, key: str, pepper: bytes, address: str | None, now: datetime) -> Principal:
    """The caller behind an API key: any failure is the same 401. Use is noted (and audited)
    at most once a minute (an hour), so a busy key does not make every request a write."""
    from orderpally import accounts, audit
    from orderpally.access.principal import Principal

    record = verify(db, key, pepper, now)
    account = accounts.load(db, record.account_id) or {}
    if account.get("status") not in KEY_STATUSES:
        raise unauthenticated("The API key's account cannot use keys now.")
    if record.needs_last_used:
        note_use(db, record, address, now)
        if record.needs_use_audit:
            actor = audit.Actor("api_key", record.key_id)
            audit.record(
                db, record.account_id, audit.AuditEvent("api_key.used", actor, address, None, {"key_id": record.key_id})
            )
    return Principal(
        kind="api_key",
        account_id=record.account_id,
        email_verified=True,
        scopes=record.scopes,
        credential_id=record.key_id,
    )


def owned(db: Client, account_id: str) -> list[dict[str, Any]]:
    """The account's keys as their owner sees them, newest first."""
    keys = (public(key_id, record) for key_id, record in store.keys_of(db, account_id))
    return sorted(keys, key=lambda k: k["created_at"], reverse=True)


def revoke(db: Client, account_id: str, key_id: str, now: datetime, event: audit.AuditEvent) -> bool:
    """Revokes the account's own key, audited as `event` once however often it is asked;
    False when it has no such key (another's is 'no such key' too)."""
    from orderpally import outbox

    found, staged = store.revoke_key(db, account_id, key_id, now, event)
    if staged is not None:
        outbox.announce(db, staged)
    return found


def revoke_all(db: Client, account_id: str, now: datetime) -> int:
    return store.revoke_all_keys(db, account_id, now)


def discard(db: Client, key_id: str) -> None:
    """Removes a key that was never handed out (its creation failed part-way)."""
    store.discard_key(db, key_id)

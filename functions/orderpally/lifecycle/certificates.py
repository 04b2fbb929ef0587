"""How the deletion certificate (`deletion_certificates/{account_id}`, written by the
deletion job) reaches the customer and staff.

After the deletion the customer has no account to sign in with, and keeping their
address to mail them later would keep the very data the deletion removes. So the
termination notice, mailed while the account still exists, carries a secret link
(`/account/deletion-certificate?token=…`) that keeps working after the deletion and
shows the certificate as it stands: pending until the job finishes, then completed
(or held). Only the token's SHA-256 is stored (`deletion_certificate_links/{sha256}`).

The customer's view holds counts, retention classes, dates and legal bases only: no
account id, and of a legal hold only that there is one (its reason and authority may
be confidential, and are staff's).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orderpally.lifecycle import store
from orderpally.lifecycle.store import CLOSED_ACCOUNT_READS as CLOSED_ACCOUNT_READS
from orderpally.lifecycle.store import LINKS as LINKS

if TYPE_CHECKING:
    from google.cloud.firestore import Client

LINK_PATH = "/account/deletion-certificate"
LOCATION_FIELDS = ("kind", "retention_class", "counts", "retained_until_latest", "retention_years", "counted_from")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_link(writer: Any, db: Client, account_id: str, base_url: str, now: datetime) -> str:
    """A new secret link to the account's certificate, stored (hashed) through `writer`."""
    token = secrets.token_urlsafe(32)
    store.add_certificate_link(writer, db, token_digest(token), account_id, now)
    return f"{base_url}{LINK_PATH}?token={token}"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def customer_view(certificate: dict | None) -> dict[str, Any]:
    """What the link shows: the certificate without anything the deletion removed or staff keep."""
    if not certificate:
        return {"status": "pending", "locations": {}}
    locations = {}
    for location_id, entry in (certificate.get("locations") or {}).items():
        shown = {k: entry[k] for k in LOCATION_FIELDS if k in entry}
        if "legal_basis" in entry:
            shown["legal_basis"] = entry["legal_basis"]
        shown["held"] = bool(entry.get("held"))
        locations[location_id] = shown
    return {
        "status": certificate.get("status", "pending"),
        "requested_at": _iso(certificate.get("requested_at")),
        "started_at": _iso(certificate.get("started_at")),
        "certified_at": _iso(certificate.get("certified_at")),
        "locations": locations,
    }


def staff_view(account_id: str, certificate: dict) -> dict[str, Any]:
    """The whole certificate, holds included, for staff."""
    return {**customer_view(certificate), "account_id": account_id, "locations": certificate.get("locations") or {}}


def for_token(db: Client, token: str) -> dict[str, Any] | None:
    """The customer's view of the certificate the link names; None for an unknown token."""
    account_id = store.certificate_link_account(db, token_digest(token))
    if account_id is None:
        return None
    return customer_view(store.certificate(db, account_id))


def record_closed_account_read(
    db: Client, account_id: str, role: str | None, reason: str, what: str, now: datetime
) -> None:
    """A staff read of a terminated account: its trail takes no more entries, so it is kept here."""
    store.add_closed_account_read(
        db, {"account_id": account_id, "role": role, "reason": reason, "what": what, "at": now}
    )

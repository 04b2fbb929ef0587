"""Content export (agreement 3.2(b)(ii)): everything the data map lists for an account,
in one archive, released only when nothing is owed.

`content_exports/{export_id}` records each request. The topic-triggered
builder writes `<account_id>/<export_id>.zip` into the exports bucket with a
SHA-256, and the customer downloads it through the API (their session or key)
until it expires.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import zipfile
from datetime import datetime, timedelta
from typing import Any

import pydantic

from orderpally.lifecycle.data_map import DataMap, Location

EXPORTS = "content_exports"
TOPIC = "content-export"
MESSAGE_TYPE = "content_export.requested"
MAX_OBJECT_BYTES = 50 * 1024 * 1024  # larger attachments are listed, not copied


class ExportMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    export_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")
    account_id: str = pydantic.Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class PaymentRequired(Exception):
    def __init__(self, amount: int, currency: str) -> None:
        super().__init__(f"{amount} {currency} outstanding")
        self.amount = amount
        self.currency = currency


def new_export_id() -> str:
    return secrets.token_urlsafe(18)


def create_request(
    db: Any, account_id: str, outstanding: tuple[int, str], now: datetime, valid_days: int, writer: Any
) -> dict:
    """Queues an export through `writer` (a batch or transaction): it commits with what else that writes."""
    amount, currency = outstanding
    if amount > 0:
        raise PaymentRequired(amount, currency)
    export_id = new_export_id()
    record = {
        "export_id": export_id,
        "account_id": account_id,
        "status": "queued",
        "requested_at": now,
        "expires_at": now + timedelta(days=valid_days),
    }
    writer.create(db.collection(EXPORTS).document(export_id), record)
    return record


def _json_line(path: str, data: dict) -> str:
    return json.dumps({"path": path, "data": data}, ensure_ascii=False, default=str, sort_keys=True)


def _documents(db: Any, location: Location, account_id: str) -> list[tuple[str, dict]]:
    from google.cloud.firestore import FieldFilter

    if location.kind == "document":
        snap = db.document(location.resolve(account_id)).get()
        return [(snap.reference.path, snap.to_dict() or {})] if snap.exists else []
    if location.kind == "collection":
        return [(s.reference.path, s.to_dict() or {}) for s in db.collection(location.resolve(account_id)).stream()]
    query = db.collection(location.collection).where(filter=FieldFilter(location.owner_field, "==", account_id))
    return [(s.reference.path, s.to_dict() or {}) for s in query.stream()]


def build_archive(
    db: Any, storage: Any, buckets: dict[str, str], data_map: DataMap, account_id: str
) -> tuple[bytes, dict[str, int]]:
    """The zip of every data-map location of the account, and a count per location."""
    buffer = io.BytesIO()
    counts: dict[str, int] = {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for location in data_map.locations:
            if location.kind == "storage":
                if location.bucket == "exports":
                    continue  # earlier exports are not content
                n = 0
                for blob in storage.list_blobs(buckets[location.bucket or ""], prefix=location.resolve(account_id)):
                    name = f"{location.id}/{blob.name.removeprefix(location.resolve(account_id))}"
                    if (blob.size or 0) <= MAX_OBJECT_BYTES:
                        archive.writestr(name, blob.download_as_bytes())
                    else:
                        archive.writestr(name + ".too-large.txt", f"{blob.size} bytes; ask support for this file\n")
                    n += 1
                counts[location.id] = n
                continue
            docs = _documents(db, location, account_id)
            counts[location.id] = len(docs)
            archive.writestr(f"{location.id}.jsonl", "".join(_json_line(p, d) + "\n" for p, d in docs))
        archive.writestr("manifest.json", json.dumps({"account_id": account_id, "counts": counts}, indent=2))
    return buffer.getvalue(), counts


def run_export(
    db: Any, storage: Any, buckets: dict[str, str], data_map: DataMap, message: ExportMessage, now: datetime
) -> str:
    """Builds the archive once; a redelivery after it is ready does nothing."""
    ref = db.collection(EXPORTS).document(message.export_id)
    snap = ref.get()
    record = snap.to_dict() or {} if snap.exists else {}
    if not record or record.get("account_id") != message.account_id:
        return "unknown"
    if record.get("status") == "ready":
        return "duplicate"
    payload, counts = build_archive(db, storage, buckets, data_map, message.account_id)
    store_ready(
        storage.bucket(buckets["exports"]), ref, f"{message.account_id}/{message.export_id}.zip", payload, counts, now
    )
    return "ready"


def store_ready(bucket: Any, ref: Any, object_name: str, payload: bytes, counts: dict[str, int], now: datetime) -> None:
    """Uploads a finished archive and marks its request ready, with the checksum the download carries."""
    bucket.blob(object_name).upload_from_string(payload, content_type="application/zip")
    ref.update(
        {
            "status": "ready",
            "object": object_name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "counts": counts,
            "ready_at": now,
        }
    )

"""Content export (agreement 3.2(b)(ii)): everything the data map lists for an account,
in one archive, released only when nothing is owed.

`content_exports/{export_id}` records each request. The topic-triggered
builder streams `<account_id>/<export_id>.zip` into the exports bucket with a
SHA-256, and the customer (their session or key) gets a short-lived signed
URL to it from the API until the export expires: a response of a function is
capped at 32 MiB, an archive is not.
"""

from __future__ import annotations

import json
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pydantic

from orderpally import accounts, events, fields, web
from orderpally.archives import service as archives
from orderpally.lifecycle import billing, store
from orderpally.lifecycle.billing import BillingState
from orderpally.lifecycle.data_map import DataMap, Location
from orderpally.lifecycle.store import EXPORTS as EXPORTS

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from orderpally.messaging.requests import SendEmail

TOPIC = "content-export"
BUILD_FUNCTION = "build_content_export"  # the topic function, whose fault document the suite arms
MESSAGE_TYPE = "content_export.requested"
MAX_OBJECT_BYTES = 50 * 1024 * 1024  # larger attachments are listed, not copied
# What a build holds in memory at once for a copied object, whatever the archive's size
# (beside the upload's chunk, archives.UPLOAD_CHUNK_BYTES).
READ_CHUNK_BYTES = 8 * 1024 * 1024


class ExportMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    export_id: fields.ArchiveId
    account_id: fields.AccountId


def payment_required(amount: int, currency: str) -> web.Problem:
    return web.Problem(
        402,
        "payment-required",
        "Payment required",
        f"Content can be retrieved once every amount due is paid; {amount} {currency} is outstanding.",
        extra={"outstanding_amount": amount, "currency": currency},
    )


def billing_unsettled() -> web.Problem:
    """Billing events wait behind a missing one: what is owed is unknown, so nothing is released."""
    return web.Problem(
        409,
        "billing-unsettled",
        "Billing not settled",
        "Some of this account's billing has not reached us yet, so what is owed is not known; "
        "content can be retrieved once it has. Try again later, or contact customer service.",
        headers={"Retry-After": "900"},
    )


def check_paid(outstanding: tuple[int, str]) -> None:
    """Content is released only while nothing is owed (clause 3.2(b)(ii))."""
    amount, currency = outstanding
    if amount > 0:
        raise payment_required(amount, currency)


def check_settled(state: BillingState) -> None:
    """The gate at request, build and download: nothing owed, and no billing event
    waiting behind a gap (the missing one may be an invoice)."""
    if state.waiting_for is not None:
        raise billing_unsettled()
    check_paid((state.outstanding, state.currency))


def new_export_id() -> str:
    return secrets.token_urlsafe(18)


def create_request(
    db: Client,
    account_id: str,
    outstanding: tuple[int, str],
    now: datetime,
    valid_days: int,
    writer: Any,
    export_id: str | None = None,
) -> dict:
    """Queues an export through `writer` (a batch or transaction): it commits with what else that writes."""
    check_paid(outstanding)
    export_id = export_id or new_export_id()
    record = {
        "export_id": export_id,
        "account_id": account_id,
        "status": "queued",
        "requested_at": now,
        "expires_at": now + timedelta(days=valid_days),
    }
    store.create_export(writer, db, export_id, record)
    return record


def _json_line(path: str, data: dict) -> str:
    return json.dumps({"path": path, "data": data}, ensure_ascii=False, default=str, sort_keys=True)


def _documents(db: Any, location: Location, account_id: str) -> Iterator[tuple[str, dict]]:
    # The same reads as the deletion job's: what an export holds is what a deletion removes.
    for snap in store.location_documents(db, location, account_id):
        yield snap.reference.path, snap.to_dict() or {}


def write_archive(
    db: Any, storage: Any, buckets: dict[str, str], data_map: DataMap, account_id: str, archive: zipfile.ZipFile
) -> dict[str, int]:
    """Writes every data-map location of the account into `archive`; a count per location."""
    counts: dict[str, int] = {}
    for location in data_map.locations:
        if location.kind == "storage":
            if location.bucket == "exports":
                continue  # earlier exports are not content
            n = 0
            for blob in storage.list_blobs(buckets[location.bucket or ""], prefix=location.resolve(account_id)):
                name = f"{location.id}/{blob.name.removeprefix(location.resolve(account_id))}"
                if (blob.size or 0) <= MAX_OBJECT_BYTES:
                    with blob.open("rb", chunk_size=READ_CHUNK_BYTES) as src, archive.open(name, "w") as dst:
                        shutil.copyfileobj(src, dst, READ_CHUNK_BYTES)
                else:
                    archive.writestr(name + ".too-large.txt", f"{blob.size} bytes; ask support for this file\n")
                n += 1
            counts[location.id] = n
            continue
        n = 0
        # force_zip64: the size is unknown until the end, and may pass 2 GiB.
        with archive.open(f"{location.id}.jsonl", "w", force_zip64=True) as dst:
            for path, data in _documents(db, location, account_id):
                shown = {k: v for k, v in data.items() if k not in location.not_exported}
                dst.write((_json_line(path, shown) + "\n").encode())
                n += 1
        counts[location.id] = n
    archive.writestr("manifest.json", json.dumps({"account_id": account_id, "counts": counts}, indent=2))
    return counts


def run_export(
    db: Any, storage: Any, buckets: dict[str, str], data_map: DataMap, message: ExportMessage, now: datetime
) -> str:
    """Builds the archive once; a redelivery after it is ready does nothing."""
    ref = store.export_ref(db, message.export_id)
    settled = archives.take_build(db, ref, message.account_id, now)
    if settled is not None:
        return "duplicate" if settled == "ready" else settled
    with archives.building(ref):
        # Checked again here: an invoice may have arrived (or queued behind a gap) since the request.
        try:
            check_settled(billing.read_state(db, message.account_id))
        except web.Problem as refused:
            archives.settle(ref, {"status": "refused", "refused": refusal(refused), "refused_at": now})
            return "refused"
        object_name = f"{message.account_id}/{message.export_id}.zip"
        with archives.streamed_archive(storage.bucket(buckets["exports"]), object_name) as (archive, out):
            counts = write_archive(db, storage, buckets, data_map, message.account_id, archive)
        archives.mark_ready(ref, object_name, out, counts, now)
    return "ready"


def build(
    db: Any,
    storage: Any,
    buckets: dict[str, str],
    data_map: DataMap,
    message: ExportMessage,
    send_email: SendEmail,
    now: datetime,
) -> str:
    """The build topic's use case: the archive, then the mail saying it is ready. The mail goes
    on a redelivery of a built export too: it may be what a crash cut off, and its idempotency
    key sends it once."""
    from orderpally.messaging.requests import EmailRequest

    outcome = run_export(db, storage, buckets, data_map, message, now)
    if outcome not in ("ready", "duplicate"):
        return outcome
    events.inject_fault(db, BUILD_FUNCTION, "before-mail")
    email = accounts.email_of(db, message.account_id)
    if not email:
        return outcome
    try:
        ready = EmailRequest(
            idempotency_key=f"content_export_ready:{message.export_id}",
            template="content_export_ready",
            to_email=email,
            account_id=message.account_id,
            data={"export_id": message.export_id, "download_path": f"/account/exports/{message.export_id}/download"},
        )
    except pydantic.ValidationError:  # a stored address mail cannot go to: the export is ready all the same
        return outcome
    send_email(ready)
    return outcome


def refusal(refused: web.Problem) -> dict[str, Any]:
    """Why content was not released (a refusal of the payment gate), as the customer is told it."""
    return {"reason": refused.slug, **refused.extra}


def load(db: Client, export_id: str) -> dict[str, Any] | None:
    return store.export(db, export_id)

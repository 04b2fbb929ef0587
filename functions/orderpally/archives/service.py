"""An archive request's use cases, shared by content exports (lifecycle) and records requests
(records): its quota taken when it is made, one build at a time under a lease, a zip streamed
into Storage with its SHA-256, the request settled, and a short-lived signed URL to it.

Each capability owns its request documents and hands their references in; `archives.store`
writes the quota and the build's lease and settlement fields on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import events, leases
from orderpally.archives import rules, store

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction

# What a build holds in memory at once for the upload: one chunk (a multiple of 256 KiB, as
# resumable uploads require), whatever the archive's size.
UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024
# A download URL is a bearer credential: short-lived, and issued again on each authorized request.
DOWNLOAD_URL_SECONDS = 300
# One build at a time per request, for longer than either build function's timeout (540 s):
# a concurrent duplicate delivery waits instead of writing the same archive twice.
BUILD_LEASE = timedelta(minutes=10)


class Digesting:
    """A write-only stream to `sink` that keeps the SHA-256 and length of what passed through.

    It cannot seek, so zipfile writes each entry's sizes after its data: the archive goes out
    as it is made and is never whole in memory.
    """

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        """Nothing: a resumable upload is finalised by closing it, not by a flush."""

    def close(self) -> None:
        """Nothing: `streamed_archive` closes the upload once the archive is whole."""

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def streamed_archive(bucket: Any, object_name: str) -> Iterator[tuple[zipfile.ZipFile, Digesting]]:
    """A zip written straight into `object_name` by a resumable upload; its digest is final on exit.

    On an error the upload is cancelled, so no partial archive replaces an earlier object.
    """
    blob = bucket.blob(object_name, chunk_size=UPLOAD_CHUNK_BYTES)
    with blob.open("wb", content_type="application/zip") as sink:
        out = Digesting(sink)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            yield archive, out


def take_build(db: Client, ref: DocumentReference, account_id: str, now: datetime) -> str | None:
    """Takes the request's build lease: None when this build holds it, else its settled status
    ("ready", "refused", or "unknown" when there is no such request of `account_id`). Raises
    RetryableError while another delivery builds it."""

    def finished(record: dict[str, Any], exists: bool) -> str | None:
        if not exists or record.get("account_id") != account_id:
            return "unknown"
        return record["status"] if record.get("status") in ("ready", "refused") else None

    claim = leases.claim(db, ref, now, BUILD_LEASE, finished=finished)
    if claim.busy:
        raise events.RetryableError("the archive is being built by another delivery")
    return claim.finished


@contextlib.contextmanager
def building(ref: DocumentReference) -> Iterator[None]:
    """The build under its lease: a build that fails lets a redelivery start again at once."""
    try:
        yield
    except BaseException:
        store.settle(ref, {})
        raise


def settle(ref: DocumentReference, fields: dict[str, Any]) -> None:
    """Settles a request (ready with what was stored, or refused); its build lease ends."""
    store.settle(ref, fields)


def mark_ready(ref: DocumentReference, object_name: str, out: Digesting, counts: dict[str, int], now: datetime) -> None:
    """Marks a request ready once its archive is stored, with the checksum the download names."""
    ready = {"status": "ready", "object": object_name, "sha256": out.sha256, "size": out.size, "ready_at": now}
    settle(ref, {**ready, "counts": counts})


def download_link(
    bucket: Any, object_name: str, filename: str, credentials: Any, endpoint: str, now: datetime
) -> dict[str, Any]:
    """A V4 signed URL to a finished archive: the bytes go from Storage to the caller, not through a function."""
    valid = timedelta(seconds=DOWNLOAD_URL_SECONDS)
    url = bucket.blob(object_name).generate_signed_url(
        version="v4",
        expiration=valid,
        method="GET",
        api_access_endpoint=endpoint,
        credentials=credentials,
        response_disposition=f'attachment; filename="{filename}"',
    )
    return {"url": url, "expires_at": now.replace(microsecond=0) + valid}


def reserve(
    transaction: Transaction,
    db: Client,
    account_id: str,
    limit: rules.Limit,
    request_ref: Callable[[str], DocumentReference],
    request_id: str,
    now: datetime,
) -> None:
    """Takes one request of `limit`'s kind for the account inside `transaction` (reads, then one
    write); raises the refusal (web.Problem) when the limit is reached. `request_ref` finds the
    owning capability's request documents, for the one still in progress."""
    slot, active = store.quota_slot(transaction, db, account_id, limit.kind, request_ref)
    store.set_quota_slot(transaction, db, account_id, limit.kind, rules.take(limit, slot, active, request_id, now))


def latest_id(db: Client, account_id: str, limit: rules.Limit) -> str | None:
    """The id of the account's latest request of `limit`'s kind (in progress or not), if it made one."""
    slot = store.quota_slot_now(db, account_id, limit.kind) or {}
    return slot.get("active_id")

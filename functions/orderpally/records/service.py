"""Records requests (clause 5.8): a customer's own records for a date range, as JSON Lines and CSV.

`records_requests/{id}` records each request; a topic-triggered builder
collects the account's audit trail (sign-in history included), the incidents
it reported and the notices mailed to it, and writes one archive into the
exports bucket (`<account_id>/records/<id>.zip`) that the customer downloads
through a short-lived signed URL.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import zipfile
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import pydantic

from orderpally import accounts, audit, events, fields, outbox, web
from orderpally.archives import rules as archive_rules
from orderpally.archives import service as archives
from orderpally.messaging.requests import EmailRequest, SendEmail
from orderpally.records import store
from orderpally.records.store import RECORDS as RECORDS  # where requests are kept (redrive reads it)

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction

BUILD_FUNCTION = "build_records"  # the topic function, whose fault document the suite arms

TOPIC = "records-request"
MESSAGE_TYPE = "records_request.requested"
MAX_RANGE = timedelta(days=3 * 366)
CSV_FIELDS = ("kind", "at", "what", "actor", "client_address", "reason", "details")


class RecordsRange(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    date_from: fields.IsoDate = pydantic.Field(alias="from")
    date_to: fields.IsoDate = pydantic.Field(alias="to")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> RecordsRange:
        if self.date_to < self.date_from:
            raise ValueError("to must not be before from")
        if self.date_to - self.date_from > MAX_RANGE:
            raise ValueError("ask for at most three years at a time")
        return self

    def bounds(self) -> tuple[datetime, datetime]:
        """[start of `from`, end of `to`) in UTC."""
        start = datetime.combine(self.date_from, time.min, tzinfo=UTC)
        return start, datetime.combine(self.date_to + timedelta(days=1), time.min, tzinfo=UTC)


class RecordsMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    request_id: fields.ArchiveId
    account_id: fields.AccountId


def new_request_id() -> str:
    return secrets.token_urlsafe(18)


# --- the archive quota a records request takes ---


def _reserve(transaction: Transaction, db: Client, account_id: str, request_id: str, now: datetime) -> None:
    """Takes one of the account's records requests (raises the 409 or 429 web.Problem)."""
    archives.reserve(
        transaction, db, account_id, archive_rules.RECORDS, lambda rid: store.ref(db, rid), request_id, now
    )


def _signed_link(bucket: Any, signing: tuple[Any, str], object_name: str, filename: str, now: datetime) -> dict:
    credentials, endpoint = signing
    return archives.download_link(bucket, object_name, filename, credentials, endpoint, now)


# --- use cases ---------------------------------------------------------------------------


def request(
    db: Client,
    publisher: events.Publisher,
    account_id: str,
    wanted: RecordsRange,
    *,
    client_address: str | None,
    now: datetime,
    valid_days: int,
) -> dict[str, Any]:
    """Queues a records request within the account's archive limits, with its audit entry, and
    starts its build. Refused (web.Problem 409 or 429) when the limits are reached."""
    request_id = new_request_id()
    event = audit.AuditEvent(
        "records.requested",
        audit.Actor("customer", account_id),
        client_address,
        None,
        {"request_id": request_id, "from": wanted.date_from.isoformat(), "to": wanted.date_to.isoformat()},
    )

    # The limit is taken in the transaction that records the request: two at once cannot both pass.
    def write(transaction: Transaction) -> tuple[dict[str, Any], outbox.Staged]:
        _reserve(transaction, db, account_id, request_id, now)
        record = create(db, account_id, wanted, now, valid_days, writer=transaction, request_id=request_id)
        return record, outbox.stage(transaction, db, account_id, event, None, now)

    record, staged = store.in_transaction(db, write)
    outbox.announce(db, staged)
    with events.left_for_later("records build"):  # archive-redrive publishes a request left queued
        publisher.publish(TOPIC, MESSAGE_TYPE, {"request_id": record["request_id"], "account_id": account_id})
    return record


def create(
    db: Client,
    account_id: str,
    wanted: RecordsRange,
    now: datetime,
    valid_days: int,
    writer: Any,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Queues a records request through `writer` (a batch or transaction): it commits with what else that writes."""
    request_id = request_id or new_request_id()
    record = {
        "request_id": request_id,
        "account_id": account_id,
        "from": wanted.date_from.isoformat(),
        "to": wanted.date_to.isoformat(),
        "status": "queued",
        "requested_at": now,
        "expires_at": now + timedelta(days=valid_days),
    }
    store.create(writer, db, request_id, record)
    return record


def owned(db: Client, account_id: str, request_id: str) -> dict[str, Any]:
    """The account's own request; another customer's is indistinguishable from none (404)."""
    record = store.load(db, request_id) if fields.ARCHIVE_ID.fullmatch(request_id) else None
    if not record or record.get("account_id") != account_id:
        raise web.Problem(404, "records-request-not-found", "Not found", "No such records request.")
    return record


def download(
    db: Client,
    bucket: Any,
    signing: tuple[Any, str],
    record: dict[str, Any],
    *,
    client_address: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A short-lived link to the ready records, recorded in the owner's trail before it leaves.
    `signing`: the credentials and endpoint that sign it."""
    if record["status"] != "ready":
        raise web.Problem(409, "records-not-ready", "Not ready", "The records are still being collected.")
    if record["expires_at"] <= now:
        raise web.Problem(410, "records-expired", "Expired", "This file has expired; request the records again.")
    account_id, request_id = record["account_id"], record["request_id"]
    link = _signed_link(bucket, signing, record["object"], f"orderpally-records-{request_id}.zip", now)
    # Recorded before the link leaves: every URL handed out is in the trail.
    audit.record(
        db,
        account_id,
        audit.AuditEvent(
            "records.downloaded", audit.Actor("customer", account_id), client_address, None, {"request_id": request_id}
        ),
    )
    return link


def collect(db: Client, account_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every record of the account in [start, end), oldest first."""
    from orderpally.incidents import service as incidents  # the build's cost, not a request's
    from orderpally.messaging import delivery as mail_delivery

    rows: list[dict[str, Any]] = []
    for entry in audit.entries_between(db, account_id, start, end):
        rows.append(
            {
                "kind": "audit",
                "at": entry["at"],
                "what": entry["action"],
                "actor": f"{entry['actor']['kind']}:{entry['actor']['id']}",
                "client_address": entry.get("client_address"),
                "reason": entry.get("reason"),
                "details": {**entry.get("details", {}), "seq": entry["seq"], "hash": entry["hash"]},
            }
        )
    for reference, incident in incidents.reported_by(db, account_id):
        if start <= incident["created_at"] < end:
            rows.append(
                {
                    "kind": "incident",
                    "at": incident["created_at"],
                    "what": f"incident {reference}",
                    "actor": f"customer:{account_id}",
                    "client_address": None,
                    "reason": None,
                    "details": {"category": incident["category"], "state": incident["state"]},
                }
            )
    for delivery in mail_delivery.deliveries_to(db, account_id):
        sent_at = delivery.get("sent_at")
        if sent_at and start <= sent_at < end:
            rows.append(
                {
                    "kind": "notice_sent",
                    "at": sent_at,
                    "what": delivery["template"],
                    "actor": "system:orderpally",
                    "client_address": None,
                    "reason": None,
                    "details": {"language": delivery.get("language"), "status": delivery["status"]},
                }
            )
    return sorted(rows, key=lambda row: row["at"])


def write_archive(zipped: zipfile.ZipFile, rows: list[dict[str, Any]], account_id: str, wanted: dict[str, str]) -> None:
    """records.jsonl, records.csv and manifest.json, each written into the zip as it is made."""

    def plain(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "at": row["at"].astimezone(UTC).isoformat()}

    def text(name: str) -> io.TextIOWrapper:
        # force_zip64: the size is unknown until the end, and may pass 2 GiB.
        return io.TextIOWrapper(zipped.open(name, "w", force_zip64=True), "utf-8", newline="")

    with text("records.jsonl") as lines:
        for row in rows:
            lines.write(json.dumps(plain(row), ensure_ascii=False, sort_keys=True) + "\n")
    with text("records.csv") as table:
        # With a byte-order mark, spreadsheet programs read the Chinese text as UTF-8.
        table.write("\ufeff")
        writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**plain(row), "details": json.dumps(row["details"], ensure_ascii=False, sort_keys=True)})
    zipped.writestr("manifest.json", json.dumps({"account_id": account_id, **wanted, "rows": len(rows)}, indent=2))


def run(db: Client, bucket: Any, message: RecordsMessage, now: datetime) -> str:
    """Builds the file once; a redelivery after it is ready does nothing."""
    ref = store.ref(db, message.request_id)
    settled = archives.take_build(db, ref, message.account_id, now)
    if settled is not None:
        return "duplicate" if settled == "ready" else settled
    with archives.building(ref):
        record = store.load(db, message.request_id) or {}
        wanted = RecordsRange.model_validate({"from": record["from"], "to": record["to"]})
        rows = collect(db, message.account_id, *wanted.bounds())
        object_name = f"{message.account_id}/records/{message.request_id}.zip"
        with archives.streamed_archive(bucket, object_name) as (zipped, out):
            write_archive(zipped, rows, message.account_id, {"from": record["from"], "to": record["to"]})
        archives.mark_ready(ref, object_name, out, {"rows": len(rows)}, now)
    return "ready"


def build(db: Client, bucket: Any, message: RecordsMessage, send_email: SendEmail, now: datetime) -> str:
    """The build topic's use case: the archive, then the mail saying it is ready. The mail goes
    on a redelivery of built records too: it may be what a crash cut off, and its idempotency
    key sends it once."""
    outcome = run(db, bucket, message, now)
    if outcome not in ("ready", "duplicate"):
        return outcome
    events.inject_fault(db, BUILD_FUNCTION, "before-mail")
    email = accounts.email_of(db, message.account_id)
    if email:
        send_email(
            EmailRequest(
                idempotency_key=f"records_ready:{message.request_id}",
                template="records_ready",
                to_email=email,
                account_id=message.account_id,
                data={
                    "request_id": message.request_id,
                    "download_path": f"/account/records-requests/{message.request_id}/download",
                },
            )
        )
    return outcome


def pending(db: Client, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
    """The requests still queued, the oldest first."""
    return sorted(
        (
            {
                "request_id": r["request_id"],
                "account_id": r["account_id"],
                "requested_at": r["requested_at"].isoformat(),
                "age_seconds": int((now - r["requested_at"]).total_seconds()),
            }
            for r in store.queued(db, limit)
        ),
        key=lambda r: -r["age_seconds"],
    )


def pending_for_staff(
    db: Client, staff: audit.Actor, client_address: str | None, reason: str | None, now: datetime
) -> list[dict[str, Any]]:
    """The queue, for staff; each listed customer sees in their trail that staff looked, and why."""
    found = pending(db, now)
    for account_id in sorted({row["account_id"] for row in found}):
        audit.record(
            db,
            account_id,
            audit.AuditEvent("staff.read", staff, client_address, reason, {"what": "records_requests"}),
        )
    return found


def load(db: Client, request_id: str) -> dict[str, Any] | None:
    return store.load(db, request_id)


def latest(db: Client, account_id: str) -> dict[str, Any] | None:
    """The account's latest records request, whatever its status; None if it made none."""
    request_id = archives.latest_id(db, account_id, archive_rules.RECORDS)
    record = store.load(db, request_id) if request_id else None
    return record if record and record.get("account_id") == account_id else None

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
from typing import Any

import pydantic

from orderpally import accounts, audit, events, fields
from orderpally.lifecycle.export import mark_ready, streamed_archive
from orderpally.messaging.requests import EmailRequest, request_email

BUILD_FUNCTION = "build_records"  # the topic function, whose fault document the suite arms

RECORDS = "records_requests"
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


def create(
    db: Any,
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
    writer.create(db.collection(RECORDS).document(request_id), record)
    return record


def collect(db: Any, account_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every record of the account in [start, end), oldest first."""
    from google.cloud.firestore import FieldFilter

    rows: list[dict[str, Any]] = []
    audit.settle(audit.account_chain(account_id))
    trail = (
        audit.trail(account_id).where(filter=FieldFilter("at", ">=", start)).where(filter=FieldFilter("at", "<", end))
    )
    for snap in trail.stream():
        entry = snap.to_dict()
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
    from orderpally.incidents.service import INCIDENTS
    from orderpally.messaging.delivery import DELIVERIES

    incidents = db.collection(INCIDENTS).where(filter=FieldFilter("reporter_account_id", "==", account_id))
    for snap in incidents.stream():
        incident = snap.to_dict()
        if start <= incident["created_at"] < end:
            rows.append(
                {
                    "kind": "incident",
                    "at": incident["created_at"],
                    "what": f"incident {snap.id}",
                    "actor": f"customer:{account_id}",
                    "client_address": None,
                    "reason": None,
                    "details": {"category": incident["category"], "state": incident["state"]},
                }
            )
    mails = db.collection(DELIVERIES).where(filter=FieldFilter("account_id", "==", account_id))
    for snap in mails.stream():
        delivery = snap.to_dict()
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


def run(db: Any, bucket: Any, message: RecordsMessage, now: datetime) -> str:
    """Builds the file once; a redelivery after it is ready does nothing."""
    ref = db.collection(RECORDS).document(message.request_id)
    record = ref.get().to_dict()
    if not record or record.get("account_id") != message.account_id:
        return "unknown"
    if record["status"] == "ready":
        return "duplicate"
    wanted = RecordsRange.model_validate({"from": record["from"], "to": record["to"]})
    rows = collect(db, message.account_id, *wanted.bounds())
    object_name = f"{message.account_id}/records/{message.request_id}.zip"
    with streamed_archive(bucket, object_name) as (zipped, out):
        write_archive(zipped, rows, message.account_id, {"from": record["from"], "to": record["to"]})
    mark_ready(ref, object_name, out, {"rows": len(rows)}, now)
    return "ready"


def build(db: Any, bucket: Any, message: RecordsMessage, now: datetime) -> str:
    """The build topic's use case: the archive, then the mail saying it is ready. The mail goes
    on a redelivery of built records too: it may be what a crash cut off, and its idempotency
    key sends it once."""
    outcome = run(db, bucket, message, now)
    if outcome not in ("ready", "duplicate"):
        return outcome
    events.inject_fault(BUILD_FUNCTION, "before-mail")
    email = accounts.email_of(db, message.account_id)
    if email:
        request_email(
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


def pending(db: Any, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    snaps = db.collection(RECORDS).where(filter=FieldFilter("status", "==", "queued")).limit(limit).stream()
    found = [snap.to_dict() for snap in snaps]
    return sorted(
        (
            {
                "request_id": r["request_id"],
                "account_id": r["account_id"],
                "requested_at": r["requested_at"].isoformat(),
                "age_seconds": int((now - r["requested_at"]).total_seconds()),
            }
            for r in found
        ),
        key=lambda r: -r["age_seconds"],
    )


def load(db: Any, request_id: str) -> dict[str, Any] | None:
    return db.collection(RECORDS).document(request_id).get().to_dict()

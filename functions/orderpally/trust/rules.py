"""The trust report's shape, as plain functions over what the capabilities answered (no I/O).

Every value comes from the system: the data map, the deployment's settings (which Terraform
gives), and the records each capability keeps. Nothing here states a fact of its own; what the
system does not record (a session's last use) is reported as not recorded.

Times are UTC ISO 8601 strings, dates ISO dates, so the JSON and the page show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from orderpally.lifecycle.data_map import DataMap, Location
from orderpally.lifecycle.rules import retained_until

TAIPEI = ZoneInfo("Asia/Taipei")
FIRESTORE = "firestore"
# A termination in these states has not ended the account yet: its date is still to come.
PENDING_TERMINATION = ("scheduled", "executing")
# A content export or records request in this state is still to be built.
PENDING_ARCHIVE = "queued"


@dataclass(frozen=True)
class Deployment:
    """What the deployment's settings say about where data is kept (config.Settings, from Terraform)."""

    region: str
    buckets: dict[str, str]  # data-map bucket (exports | attachments | backups) -> bucket name
    encryption_at_rest: dict[str, dict[str, str]]  # store -> {key, rotation_period} | {managed_by}
    backup_retention_days: int
    session_lifetime: timedelta
    # The local stack: the Firestore emulator exports snapshots to a directory, not the bucket.
    snapshots_exported_locally: bool = False


def iso(value: Any) -> Any:
    """A datetime (always aware: Firestore's) as UTC ISO 8601, a date as an ISO date; else as is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _utc(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def encryption(deployment: Deployment, store: str) -> dict[str, Any]:
    """How `store` is encrypted at rest, as configured: our Cloud KMS key and its rotation, or
    Google's own keys; "not_configured" when the deployment does not say (the local stack)."""
    entry = deployment.encryption_at_rest.get(store)
    if not entry:
        return {"managed_by": "not_configured"}
    if entry.get("managed_by") == "google":
        return {"managed_by": "google"}
    seconds = int(entry["rotation_period"].removesuffix("s"))
    days = seconds / 86400
    return {
        "managed_by": "customer",
        "key": entry["key"],
        "rotation_period_seconds": seconds,
        "rotation_period_days": int(days) if days.is_integer() else round(days, 2),
    }


def _where(location: Location, account_id: str, deployment: Deployment) -> dict[str, Any]:
    if location.kind == "storage":
        bucket = location.bucket or ""
        return {
            "service": "cloud_storage",
            "bucket": deployment.buckets.get(bucket, bucket),
            "prefix": location.resolve(account_id),
            "encryption": encryption(deployment, bucket),
        }
    where: dict[str, Any] = {"service": FIRESTORE, "encryption": encryption(deployment, FIRESTORE)}
    if location.kind in ("document", "collection"):
        where["path"] = location.resolve(account_id)
    else:
        where |= {"collection": location.collection, "owner_field": location.owner, "collection_group": location.group}
        if location.children:
            parent = f"{location.collection}/{{id}}"
            where["sub_collections"] = [child.resolve(child.collection, parent) for child in location.children]
    return where


def data_locations(data_map: DataMap, account_id: str, deployment: Deployment) -> list[dict[str, Any]]:
    """Every place the data map says the account's data lives, in the map's order."""
    return [
        {
            "id": location.id,
            "kind": location.kind,
            **_where(location, account_id, deployment),
            "region": deployment.region,
            "retention_class": location.retention,
            "shared_with": location.shared_with,
        }
        for location in data_map.locations
    ]


def termination_day(termination: dict[str, Any] | None, now: datetime) -> date:
    """The day retention would be counted from: the termination's own (its date, or when it was
    carried out), else today, were the account terminated now (UTC, as the deletion job counts)."""
    termination = termination or {}
    now = now.astimezone(UTC)
    terminate_at, executed_at = _utc(termination.get("terminate_at")), _utc(termination.get("executed_at"))
    if termination.get("status") in PENDING_TERMINATION and terminate_at:
        return max(terminate_at, now).date()  # a date already past is carried out now
    if termination.get("status") == "executed" and executed_at:
        return executed_at.date()
    return now.date()


def retention_at_termination(data_map: DataMap, day: date) -> list[dict[str, Any]]:
    """Each retention class that applies to the account's data, with its locations, its legal
    basis and the latest purge date of what it keeps (a record dated `day`: older ones go sooner)."""
    classes = []
    for name, retention in data_map.retention_classes.items():
        locations = [location.id for location in data_map.locations if location.retention == name]
        if not locations:
            continue
        entry: dict[str, Any] = {"class": name, "action": retention.action, "locations": locations}
        if retention.action == "delete":
            entry["deleted_from"] = day.isoformat()
        else:
            years = retention.years or 0
            entry |= {
                "legal_basis": retention.legal_basis,
                "years": years,
                "counted_from": "annual_closing" if retention.from_annual_closing else "record_date",
                "purge_date_latest": retained_until(day, years, retention.from_annual_closing).isoformat(),
            }
        classes.append(entry)
    return classes


def last_snapshot(
    found: tuple[str, dict[str, Any]] | None, taken_at: datetime | None, deployment: Deployment
) -> dict[str, Any] | None:
    """The snapshot that last took the account's data: when, verified when (if recorded), and the
    earliest it may go (the bucket keeps each object `backup_retention_days` from its creation)."""
    if found is None or taken_at is None:
        return None
    slot, record = found
    written = _utc(record.get("started_at")) or taken_at
    uri = str(record.get("output_uri") or "")
    return {
        "slot": slot,
        "taken_at": iso(taken_at),
        "completed_at": iso(record.get("completed_at")),
        "verified_at": iso(record.get("verified_at")),
        "kept_until": iso(written + timedelta(days=deployment.backup_retention_days)),
        # A local stack's export is a directory of this machine, which the report does not name.
        "location": uri if uri.startswith("gs://") else None,
    }


def backups(snapshot: dict[str, Any] | None, deployment: Deployment) -> dict[str, Any]:
    return {
        "bucket": None if deployment.snapshots_exported_locally else deployment.buckets.get("backups"),
        "exported_locally": deployment.snapshots_exported_locally,
        "region": deployment.region,
        "encryption": encryption(deployment, "backups"),
        "retention_days": deployment.backup_retention_days,
        "last_snapshot": snapshot,
    }


def staff_accesses(trail_reads: list[dict[str, Any]], closed_reads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each staff read, newest first: when, the role, the reason and what was read; never who or
    from where (`trail_reads` come as the customer sees them, `closed_reads` keep no more)."""
    reads = [
        {
            "at": entry.get("at"),
            "role": (entry.get("actor") or {}).get("role"),
            "reason": entry.get("reason"),
            "what": (entry.get("details") or {}).get("what"),
            "reference": (entry.get("details") or {}).get("reference"),
        }
        for entry in trail_reads
    ]
    reads += [
        {"at": read.get("at"), "role": read.get("role"), "reason": read.get("reason"), "what": read.get("what")}
        | {"reference": None}
        for read in closed_reads
    ]
    reads.sort(key=lambda read: _utc(read["at"]) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return [{k: iso(v) for k, v in read.items()} for read in reads]


def sessions(
    sign_ins: list[dict[str, Any]],
    ended_everywhere_at: datetime | None,
    single_sign_outs: int,
    lifetime: timedelta,
) -> dict[str, Any]:
    """The sessions that may still be open, from their sign-ins; a session's use is not recorded."""
    return {
        "open": [
            {
                "signed_in_at": iso(entry["at"]),
                "method": (entry.get("details") or {}).get("method"),
                "client_address": entry.get("client_address"),
                "expires_at": iso(entry["at"] + lifetime),
            }
            for entry in sign_ins
        ],
        "ended_everywhere_at": iso(ended_everywhere_at),
        "single_sign_outs": single_sign_outs,
        "last_use_recorded": False,
    }


API_KEY_FIELDS = ("id", "name", "scopes", "created_at", "expires_at", "last_used_at", "last_used_address")


def api_keys(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{field: iso(key.get(field)) for field in API_KEY_FIELDS} for key in keys]


def legal_holds(holds: list[dict[str, Any]]) -> dict[str, Any]:
    """How many holds, since when, on what basis and over which locations: not staff's reasons or names."""
    ordered = sorted(holds, key=lambda hold: _utc(hold.get("placed_at")) or datetime.min.replace(tzinfo=UTC))
    return {
        "count": len(ordered),
        "since": iso(ordered[0].get("placed_at")) if ordered else None,
        "holds": [
            {
                "placed_at": iso(hold.get("placed_at")),
                "basis": hold.get("authority"),
                "locations": list(hold.get("location_ids") or []),  # empty: every location
            }
            for hold in ordered
        ],
    }


def termination(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The account's termination: its basis and dates, who asked by kind and role; no reason texts."""
    if not record:
        return None
    asked = record.get("requested_by") or {}
    return {
        "status": record.get("status"),
        "pending": record.get("status") in PENDING_TERMINATION,
        "basis": record.get("basis"),
        "terminate_at": iso(record.get("terminate_at")),
        "requested_at": iso(record.get("requested_at")),
        "requested_by": {"kind": asked.get("kind"), "role": asked.get("role")},
        "cancelled_at": iso(record.get("cancelled_at")),
        "executed_at": iso(record.get("executed_at")),
    }


def archive_request(record: dict[str, Any] | None, id_field: str) -> dict[str, Any] | None:
    """A content export or records request: its status and dates."""
    if not record:
        return None
    shown = {"id": record.get(id_field), "status": record.get("status"), "pending": record.get("status") == "queued"}
    for field in ("from", "to", "requested_at", "ready_at", "refused_at", "expires_at"):
        if field in record:
            shown[field] = iso(record[field])
    return shown


INCIDENT_FIELDS = {
    "category": "category",
    "state": "state",
    "severity": "severity",
    "reported_at": "created_at",
    "first_response_due": "first_response_due",
    "first_responded_at": "first_responded_at",
    "resolution_due": "resolution_due",
}


def incidents(reported: list[tuple[str, dict[str, Any]]], open_states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The account's own reports still open, newest first: their state and deadlines, no texts."""
    found = [(reference, incident) for reference, incident in reported if incident.get("state") in open_states]
    found.sort(key=lambda item: _utc(item[1].get("created_at")) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return [
        {"reference": reference, **{shown: iso(incident.get(kept)) for shown, kept in INCIDENT_FIELDS.items()}}
        for reference, incident in found
    ]


def notices(found: list[tuple[str, dict[str, Any], dict[str, Any]]], now: datetime) -> list[dict[str, Any]]:
    """The service-change and SLA notices addressed to the account, in both languages, and whether
    each is in effect yet (its effective date has come in Asia/Taipei)."""
    today = now.astimezone(TAIPEI).date().isoformat()
    return [
        {
            "id": notice_id,
            "kind": notice.get("kind"),
            "title": {language: text.get("title") for language, text in (version.get("text") or {}).items()},
            "version": version.get("version"),
            "published_at": iso(version.get("published_at")),
            "effective_date": version.get("effective_date"),
            "in_effect": str(version.get("effective_date")) <= today,
            "sla": notice.get("sla"),
        }
        for notice_id, notice, version in found
    ]


def account(account_id: str, record: dict[str, Any] | None) -> dict[str, Any]:
    record = record or {}
    return {
        "id": account_id,
        "kind": record.get("kind"),
        "status": record.get("status", "deleted" if not record else None),
        "language": record.get("language"),
        "created_at": iso(record.get("created_at")),
        "terminated_at": iso(record.get("terminated_at")),
    }

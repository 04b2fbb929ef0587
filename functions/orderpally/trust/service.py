"""The trust report's use cases: an account's report for its customer, and for staff with a reason.

The report is read live, each fact through the service of the capability that keeps it:
the data map and the deployment's settings (where data lives, its region and keys), backups
(the last snapshot holding the account's data), access (staff reads, sessions, API keys),
the lifecycle (legal holds, termination, export, the deletion certificate, staff reads of a
closed account), records, incidents and notices. This capability keeps no data of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orderpally import accounts, audit, fields, web
from orderpally.access import service as access
from orderpally.backups import rules as backup_rules
from orderpally.backups import service as backups
from orderpally.incidents import rules as incident_rules
from orderpally.incidents import service as incidents
from orderpally.lifecycle import service as lifecycle
from orderpally.notices import service as notices
from orderpally.records import service as records
from orderpally.trust import rules

if TYPE_CHECKING:
    from firebase_admin import App
    from google.cloud.firestore import Client

# What a staff read of the report is recorded as, in the customer's trail (`details.what`).
STAFF_READ_WHAT = "trust_report"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Sources:
    """What the report reads; the HTTP edge builds it from this process's clients and settings."""

    db: Client
    auth_app: App  # Firebase Authentication: when the account's sessions were last all ended
    deployment: rules.Deployment
    now: Callable[[], datetime] = field(default=_utc_now)


def no_such_account() -> web.Problem:
    return web.Problem(404, "account-not-found", "Not found", "No such account.")


def for_customer(sources: Sources, account_id: str) -> dict[str, Any]:
    """The signed-in customer's own report."""
    if accounts.load(sources.db, account_id) is None:
        raise no_such_account()
    return build(sources, account_id)


def for_staff(
    sources: Sources, account_id: str, *, actor: audit.Actor, reason: str, client_address: str | None
) -> dict[str, Any]:
    """The account's report for a staff member, recorded with the reason before it leaves: in the
    customer's trail while it takes entries, else beside the deletion certificate (as every
    staff read of a terminated account is)."""
    db = sources.db
    if not fields.ACCOUNT_ID.fullmatch(account_id):
        raise no_such_account()

    def still_known(gone: str) -> bool:  # the account document is gone: is anything of it left to show?
        termination = lifecycle.current_termination(db, gone)
        return termination is not None or lifecycle.deletion_certificate(db, gone) is not None

    lifecycle.record_staff_read(
        db,
        account_id,
        exists=still_known,
        actor=actor,
        client_address=client_address,
        reason=reason,
        what=STAFF_READ_WHAT,
        now=sources.now(),
    )
    return {**build(sources, account_id), "for_staff": True}


def build(sources: Sources, account_id: str) -> dict[str, Any]:
    """Every fact of the report, each read now from the capability that keeps it."""
    db, deployment, now = sources.db, sources.deployment, sources.now()
    account = accounts.load(db, account_id)
    termination = lifecycle.current_termination(db, account_id)
    certificate = lifecycle.deletion_certificate(db, account_id)
    deleted_by = certificate.get("certified_at") if certificate and certificate.get("status") == "completed" else None
    # A snapshot taken after the deletion was certified holds nothing of the account any more.
    found = backups.last_completed(db, taken_after=(account or {}).get("created_at"), taken_before=deleted_by)
    snapshot = rules.last_snapshot(found, backup_rules.slot_time(found[0]) if found else None, deployment)
    open_sessions = access.open_sessions(db, sources.auth_app, account_id, deployment.session_lifetime, now)
    the_map = lifecycle.where_data_lives()
    shown_certificate = certificate is not None or (termination or {}).get("status") == "executed"
    return {
        "generated_at": rules.iso(now),
        "account": rules.account(account_id, account),
        "data_locations": rules.data_locations(the_map, account_id, deployment),
        "backups": rules.backups(snapshot, deployment),
        "staff_accesses": rules.staff_accesses(
            access.staff_reads(db, account_id), lifecycle.closed_account_reads(db, account_id)
        ),
        "sessions": rules.sessions(
            open_sessions.sign_ins,
            open_sessions.ended_everywhere_at,
            open_sessions.single_sign_outs,
            deployment.session_lifetime,
        ),
        "api_keys": rules.api_keys(access.active_api_keys(db, account_id, now)),
        "legal_holds": rules.legal_holds(lifecycle.holds_on(db, account_id)),
        "retention_at_termination": {
            "counted_from_day": rules.termination_day(termination, now).isoformat(),
            "classes": rules.retention_at_termination(the_map, rules.termination_day(termination, now)),
        },
        "requests": {
            "termination": rules.termination(termination),
            "export": rules.archive_request(lifecycle.latest_export(db, account_id), "export_id"),
            "records": rules.archive_request(records.latest(db, account_id), "request_id"),
        },
        "deletion_certificate": lifecycle.certificate_for_customer(certificate) if shown_certificate else None,
        "incidents": rules.incidents(list(incidents.reported_by(db, account_id)), incident_rules.OPEN_STATES),
        "notices": rules.notices(notices.affecting(db, account, now) if account else [], now),
    }

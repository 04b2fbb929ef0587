"""The lifecycle's use cases: terminations, suspensions, legal holds and content export requests,
against Firestore and Firebase Authentication. The HTTP routes and the due-terminations
schedule call them alike.

`terminations/{account_id}` holds the account's current termination: who asked,
on what basis, when it takes effect, and what has been done. Every step is
written to the account's audit trail and announced to the customer by email.

The audit entry and the email commit with the change they record (`outbox`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pydantic

from orderpally import accounts, audit, events, outbox, structured_logging, web
from orderpally.accounts import preferred_language
from orderpally.archives import rules as archive_rules
from orderpally.archives import service as archives
from orderpally.config import settings
from orderpally.lifecycle import billing, certificates, data_map, deletion, store
from orderpally.lifecycle import export as content_export
from orderpally.lifecycle.rules import (
    Basis,
    account_status_with_termination,
    can_cancel,
    company_initiated,
    customer_termination_at,
    recently_authenticated,
    staff_termination_at,
    takes_effect_now,
)
from orderpally.lifecycle.store import TERMINATIONS as TERMINATIONS
from orderpally.messaging.requests import EmailRequest

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction, WriteBatch

_log = structured_logging.get_logger("orderpally.lifecycle")


def _refused(slug: str, detail: str) -> web.Problem:
    """The account is not in a state that allows this (409), or is not there (404); `slug` names why."""
    if slug.endswith("not-found"):
        return web.Problem(404, slug, "Not found", detail)
    return web.Problem(409, slug, "Not possible now", detail)


@dataclass(frozen=True)
class Effects:
    """The outside world the lifecycle acts on, so tests and the composition root choose it."""

    db: Any
    auth_app: Any
    send_email: Callable[[EmailRequest], object]
    publish_deletion: Callable[[str], object]
    public_base_url: str = ""  # where the deletion certificate's link points


def effects(db: Client, auth_app: Any, publisher: events.Publisher) -> Effects:
    """The deployed effects over the clients the composition edge (a route, a schedule) passes in."""
    from orderpally.messaging.requests import sender

    return Effects(
        db=db,
        auth_app=auth_app,
        send_email=sender(publisher),
        publish_deletion=lambda account_id: publisher.publish(
            deletion.TOPIC, deletion.MESSAGE_TYPE, {"account_id": account_id}
        ),
        public_base_url=settings().public_base_url,
    )


def _account(db: Any, account_id: str) -> dict:
    account = accounts.load(db, account_id)
    if account is None:
        raise _refused("account-not-found", "No such account.")
    return account


def _notice(account_id: str, account: dict, template: str, key: str, data: dict) -> EmailRequest | None:
    """The customer's notice; None (logged, never a failure of the action) for an unusable stored address."""
    try:
        return EmailRequest(
            idempotency_key=f"{template}:{account_id}:{key}",
            template=template,
            to_email=account.get("email") or "",
            account_id=account_id,
            language=preferred_language(account.get("language")),
            data=data,
        )
    except pydantic.ValidationError:
        structured_logging.log(_log, logging.WARNING, "notice not sent: no usable email", account_id=account_id)
        return None


# --- terminations ------------------------------------------------------------------------


def require_recent_sign_in(session_issued_at: int | None, now: datetime) -> None:
    """Terminating needs a recent sign-in (re-authentication), whoever holds the session."""
    window = settings().termination_reauth_seconds
    if not recently_authenticated(session_issued_at, now, window):
        raise web.Problem(
            401,
            "reauthentication-required",
            "Sign in again",
            f"Terminating needs a sign-in within the last {window // 60} minutes.",
        )


def request_termination(
    effects: Effects,
    account_id: str,
    *,
    requested: date | None,
    session_issued_at: int | None,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> dict:
    """The customer ends their own account, at once (`requested` None) or at the end of a day;
    only from a recent sign-in."""
    require_recent_sign_in(session_issued_at, now)
    cfg = settings()
    return schedule_termination(
        effects,
        account_id,
        basis=Basis.CUSTOMER_CONVENIENCE,
        terminate_at=customer_termination_at(requested, now, cfg.termination_max_days_ahead),
        actor=actor,
        reason=None,
        client_address=client_address,
        now=now,
    )


def terminate_by_staff(
    effects: Effects,
    account_id: str,
    *,
    basis: Basis,
    reason: str,
    requested: date | None,
    cure_period_days: int | None,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> dict:
    """OrderPally ends the account on `basis`, when that basis allows."""
    terminate_at = staff_termination_at(
        basis,
        now,
        notice_days=settings().company_termination_notice_days,
        cure_period_days=cure_period_days,
        requested=requested,
    )
    return schedule_termination(
        effects,
        account_id,
        basis=basis,
        terminate_at=terminate_at,
        actor=actor,
        reason=reason,
        client_address=client_address,
        now=now,
    )


_BY_ORDERPALLY = "termination-by-orderpally"


def schedule_termination(
    effects: Effects,
    account_id: str,
    *,
    basis: Basis,
    terminate_at: datetime,
    actor: audit.Actor,
    reason: str | None,
    client_address: str | None,
    now: datetime,
) -> dict:
    """Records the termination; an earlier scheduled one is replaced, an executed one refuses.

    A customer cannot replace OrderPally's termination. One that takes effect now ends
    access before this returns.
    """
    db = effects.db
    account = _account(db, account_id)
    when = terminate_at.isoformat()
    event = audit.AuditEvent(
        "termination.scheduled", actor, client_address, reason, {"basis": basis.value, "terminate_at": when}
    )
    # Keyed by this scheduling, not only its date: after a cancellation the same date is
    # scheduled anew and must be announced again.
    notice = _notice(
        account_id,
        account,
        "termination_scheduled",
        f"{when}:{now.isoformat()}",
        {"basis": basis.value, "terminate_at": when, "reason": reason or ""},
    )

    def write(transaction: Transaction) -> tuple[dict, outbox.Staged]:
        existing = store.termination(db, account_id, transaction) or {}
        if existing.get("status") in ("executing", "executed"):
            raise _refused("already-terminated", "This account has already been terminated.")
        if existing.get("status") == "scheduled" and company_initiated(existing["basis"]) and actor.kind != "staff":
            raise _refused(_BY_ORDERPALLY, "OrderPally has terminated this account; contact customer service.")
        status = accounts.load_in(transaction, db, account_id).get("status")
        record = {
            "account_id": account_id,
            "basis": basis.value,
            "status": "scheduled",
            "terminate_at": terminate_at,
            "requested_by": {"kind": actor.kind, "id": actor.id, "role": actor.role},
            "reason": reason,
            "requested_at": now,
            "user_deleted": False,
        }
        store.set_termination(transaction, db, account_id, record)
        accounts.update(
            db, account_id, {"status": account_status_with_termination(status, scheduled=True)}, writer=transaction
        )
        return record, outbox.stage(transaction, db, account_id, event, notice, now)

    record, announcement = store.in_transaction(db, write)
    outbox.announce(db, announcement, effects.send_email)
    if takes_effect_now(terminate_at, now):
        # Access ends in this request; should a backing service be down, the due-terminations
        # sweep finishes what is left (the record says "scheduled" or "executing").
        with events.left_for_later("immediate termination"):
            _execute(effects, account_id, basis.value, now)
            record = {**record, "status": "executed", "executed_at": now}
    return record


def cancel_termination(
    effects: Effects,
    account_id: str,
    *,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
    reason: str | None = None,
) -> None:
    """Cancels a scheduled termination before its date; OrderPally's only by staff, with a reason."""
    db = effects.db
    account = _account(db, account_id)

    event = audit.AuditEvent("termination.cancelled", actor, client_address, reason)
    notice = _notice(account_id, account, "termination_cancelled", now.isoformat(), {})

    def write(transaction: Transaction) -> outbox.Staged:
        record = store.termination(db, account_id, transaction) or {}
        if not record:
            raise _refused("no-termination", "No termination is scheduled.")
        if company_initiated(record.get("basis", "")) and actor.kind != "staff":
            raise _refused(_BY_ORDERPALLY, "OrderPally has terminated this account; contact customer service.")
        if not can_cancel(record.get("status", ""), record["terminate_at"], now):
            raise _refused("termination-final", "The termination date has passed; it cannot be undone.")
        status = accounts.load_in(transaction, db, account_id).get("status")
        store.update_termination(
            db, account_id, {"status": "cancelled", "cancelled_at": now, "cancel_reason": reason}, writer=transaction
        )
        accounts.update(
            db, account_id, {"status": account_status_with_termination(status, scheduled=False)}, writer=transaction
        )
        return outbox.stage(transaction, db, account_id, event, notice, now)

    outbox.announce(db, store.in_transaction(db, write), effects.send_email)


def current_termination(db: Client, account_id: str) -> dict | None:
    return store.termination(db, account_id)


def _revoke_access(effects: Effects, account_id: str, disable: bool) -> None:
    from firebase_admin import auth

    try:
        auth.update_user(account_id, disabled=disable, app=effects.auth_app)
        if disable:
            auth.revoke_refresh_tokens(account_id, app=effects.auth_app)
    except auth.UserNotFoundError:
        pass


def execute_due(effects: Effects, now: datetime, limit: int = 100) -> dict[str, int]:
    """Ends accounts whose termination date has come; then deletes their Firebase users once
    their deletion certificate is complete. Every step is idempotent."""
    from firebase_admin import auth

    db = effects.db
    executed = users_deleted = 0
    for account_id, basis in store.due_terminations(db, now, limit):
        _execute(effects, account_id, basis, now)
        executed += 1

    for account_id in store.executed_with_user_left(db, limit):
        certificate = store.certificate(db, account_id)
        if certificate is None or certificate.get("status") != "completed":
            continue
        with contextlib.suppress(auth.UserNotFoundError):
            auth.delete_user(account_id, app=effects.auth_app)
        store.update_termination(db, account_id, {"user_deleted": True})
        users_deleted += 1
    return {"executed": executed, "users_deleted": users_deleted}


def _execute(effects: Effects, account_id: str, basis: str, now: datetime) -> None:
    """Ends the account's access and starts its deletion; each step may run again after a crash."""
    db = effects.db
    store.update_termination(db, account_id, {"status": "executing"})
    _revoke_access(effects, account_id, disable=True)
    from orderpally.access import service as access  # only a termination's run needs it, not a cold start

    access.revoke_all_keys(db, account_id, now)
    account = accounts.load(db, account_id) or {}
    if account and account.get("status") != "terminated":  # not again after a crash past this commit

        def write(batch: WriteBatch) -> outbox.Staged:
            accounts.update(db, account_id, {"status": "terminated", "terminated_at": now}, writer=batch)
            # The last mail the account can get: it carries the link that shows the deletion
            # certificate once the deletion is done, since no address is kept to mail it then.
            link = certificates.issue_link(batch, db, account_id, effects.public_base_url, now)
            return outbox.stage(
                batch,
                db,
                account_id,
                audit.AuditEvent("account.terminated", audit.SYSTEM),
                _notice(account_id, account, "account_terminated", "final", {"certificate_url": link}),
                now,
            )

        outbox.announce(db, store.in_batch(db, write), effects.send_email)
    deletion.request_deletion(db, account_id, "system", f"termination: {basis}")
    effects.publish_deletion(account_id)
    store.update_termination(db, account_id, {"status": "executed", "executed_at": now})
    structured_logging.log(_log, logging.INFO, "termination executed", account_id=account_id)


# --- suspensions -------------------------------------------------------------------------


def set_suspension(
    effects: Effects,
    account_id: str,
    *,
    suspended: bool,
    code: str | None,
    reason: str | None,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> None:
    """Suspends (sign-in and keys blocked, sessions revoked) or lifts a suspension."""
    db = effects.db
    account = _account(db, account_id)
    status = account.get("status")
    if status == "terminated":
        raise _refused("already-terminated", "This account has been terminated.")
    if suspended and status == "suspended":
        raise _refused("already-suspended", "This account is already suspended.")
    if not suspended and status != "suspended":
        raise _refused("not-suspended", "This account is not suspended.")
    termination = current_termination(db, account_id)
    restored = "terminating" if termination and termination.get("status") == "scheduled" else "active"
    # Sign-in first: a crash before the commit leaves the status as it was, so the same call can be made again.
    _revoke_access(effects, account_id, disable=suspended)
    action = "account.suspended" if suspended else "account.suspension_lifted"
    template = "account_suspended" if suspended else "account_suspension_lifted"

    def write(batch: WriteBatch) -> outbox.Staged:
        accounts.update(
            db,
            account_id,
            {
                "status": "suspended" if suspended else restored,
                "suspension": {"code": code, "reason": reason, "by": actor.id, "at": now} if suspended else None,
            },
            writer=batch,
        )
        return outbox.stage(
            batch,
            db,
            account_id,
            audit.AuditEvent(action, actor, client_address, reason, {"code": code}),
            _notice(account_id, account, template, now.isoformat(), {"code": code or "", "reason": reason or ""}),
            now,
        )

    outbox.announce(db, store.in_batch(db, write), effects.send_email)


# --- legal holds -------------------------------------------------------------------------


def place_hold(
    db: Client,
    account_id: str,
    *,
    location_ids: list[str],
    reason: str,
    authority: str,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> str:
    def write(batch: WriteBatch) -> tuple[str, outbox.Staged]:
        hold_id = store.create_hold(
            batch,
            db,
            {
                "account_id": account_id,
                "location_ids": location_ids,
                "reason": reason,
                "authority": authority,
                "placed_by": actor.id,
                "placed_at": now,
                "released_at": None,
            },
        )
        event = audit.AuditEvent(
            "legal_hold.placed", actor, client_address, reason, {"hold_id": hold_id, "authority": authority}
        )
        return hold_id, outbox.stage(batch, db, account_id, event, None, now)

    hold_id, announcement = store.in_batch(db, write)
    outbox.announce(db, announcement)
    return hold_id


def release_hold(
    effects: Effects, hold_id: str, *, actor: audit.Actor, client_address: str | None, now: datetime, reason: str
) -> dict:
    db = effects.db
    found = store.hold(db, hold_id)
    if found is None:
        raise _refused("hold-not-found", "No such legal hold.")
    hold, read_at = found
    if hold.get("released_at"):
        raise _refused("hold-released", "This hold has already been released.")
    account_id = hold["account_id"]
    event = audit.AuditEvent("legal_hold.released", actor, client_address, reason, {"hold_id": hold_id})
    # Only the hold as read: of two releases at once, one is recorded and the other refused.
    announcement = store.release_hold(
        db,
        hold_id,
        {"released_at": now, "released_by": actor.id, "release_reason": reason},
        read_at,
        lambda batch: outbox.stage(batch, db, account_id, event, None, now),
    )
    if announcement is None:
        raise _refused("hold-released", "This hold has already been released.")
    outbox.announce(db, announcement)
    job = store.deletion_job(db, account_id)
    if job is not None and job.get("status") == "held":
        # A deletion waiting on this hold may finish now.
        effects.publish_deletion(account_id)
    return {**hold, "id": hold_id, "released_at": now}


def holds_on(db: Client, account_id: str) -> list[dict]:
    """The legal holds in force on the account (their reasons included: callers choose what to show)."""
    return store.active_holds(db, account_id)


# --- content export ----------------------------------------------------------------------


def request_export(
    db: Client,
    publisher: events.Publisher,
    account_id: str,
    *,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> dict:
    """Queues an export of the account's content, within its archive limits and only while
    nothing is owed, and starts its build."""
    account = accounts.load(db, account_id) or {}
    if account.get("status") in ("terminated", "suspended", None):
        raise web.Problem(409, "account-not-active", "Not possible now", "This account cannot export its content.")
    export_id = content_export.new_export_id()
    event = audit.AuditEvent("export.requested", actor, client_address, None, {"export_id": export_id})

    # The balance is read in the transaction that records the request: a billing event
    # committed in between makes it retry and read again. The build and the download check again.
    def write(transaction: Transaction) -> tuple[dict, outbox.Staged]:
        state = billing.read_state(db, account_id, transaction)
        content_export.check_settled(state)
        archives.reserve(
            transaction, db, account_id, archive_rules.EXPORTS, lambda eid: store.export_ref(db, eid), export_id, now
        )
        record = content_export.create_request(
            db,
            account_id,
            (state.outstanding, state.currency),
            now,
            settings().export_valid_days,
            writer=transaction,
            export_id=export_id,
        )
        return record, outbox.stage(transaction, db, account_id, event, None, now)

    record, staged = store.in_transaction(db, write)
    outbox.announce(db, staged)
    with events.left_for_later("content export build"):  # archive-redrive publishes a request left queued
        publisher.publish(
            content_export.TOPIC,
            content_export.MESSAGE_TYPE,
            {"export_id": record["export_id"], "account_id": account_id},
        )
    return record


def export_download(
    db: Client,
    bucket: Any,
    signing: tuple[Any, str],
    record: dict,
    *,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A short-lived link to the account's ready export, only while nothing is owed; recorded
    in the trail before it leaves. `signing`: the credentials and endpoint that sign it."""
    if record.get("status") != "ready":
        raise web.Problem(409, "export-not-ready", "Not ready", "The export is still being prepared.")
    if record["expires_at"] <= now:
        raise web.Problem(410, "export-expired", "Expired", "This export has expired; request a new one.")
    account_id, export_id = record["account_id"], record["export_id"]
    # Retrieval, not only the request, waits until nothing is owed (clause 3.2(b)(ii)).
    content_export.check_settled(billing.read_state(db, account_id))
    credentials, endpoint = signing
    link = archives.download_link(
        bucket, record["object"], f"orderpally-export-{export_id}.zip", credentials, endpoint, now
    )
    # Recorded before the link leaves: every URL handed out is in the trail.
    audit.record(
        db, account_id, audit.AuditEvent("export.downloaded", actor, client_address, None, {"export_id": export_id})
    )
    return link


def latest_export(db: Client, account_id: str) -> dict | None:
    """The account's latest content export request, whatever its status; None if it made none."""
    export_id = archives.latest_id(db, account_id, archive_rules.EXPORTS)
    record = content_export.load(db, export_id) if export_id else None
    return record if record and record.get("account_id") == account_id else None


# --- staff reads -------------------------------------------------------------------------


def record_staff_read(
    db: Client,
    account_id: str,
    *,
    exists: Callable[[str], bool],
    actor: audit.Actor,
    client_address: str | None,
    reason: str,
    what: str,
    now: datetime,
) -> None:
    """Records a staff read before the data leaves: in the customer's trail while it takes
    entries, else beside the certificate (a terminated account's trail is closed).
    `exists` says whether the read finds anything once the account document is gone."""
    account = accounts.load(db, account_id)
    if account is None and not exists(account_id):
        raise web.Problem(404, "account-not-found", "Not found", "No such account.")
    if account is not None and account.get("status") != "terminated":
        audit.record(db, account_id, audit.AuditEvent("staff.read", actor, client_address, reason, {"what": what}))
    else:
        certificates.record_closed_account_read(db, account_id, actor.role, reason, what, now)


def closed_account_reads(db: Client, account_id: str) -> list[dict]:
    """The staff reads of the account kept beside its certificate once its trail was closed, newest first."""
    return sorted(store.closed_account_reads(db, account_id), key=lambda read: read["at"], reverse=True)


# --- what the trust report shows -------------------------------------------------------


def deletion_certificate(db: Client, account_id: str) -> dict[str, Any] | None:
    """The account's deletion certificate, once its deletion began; None before."""
    return store.certificate(db, account_id)


def certificate_for_customer(certificate: dict[str, Any] | None) -> dict[str, Any]:
    """A deletion certificate as its customer is shown it."""
    return certificates.customer_view(certificate)


def where_data_lives() -> data_map.DataMap:
    """The data map: every place customer data lives, with its retention class."""
    return data_map.load()


# --- what the audit checkpoints ask ------------------------------------------------------


def deletion_started(db: Client, account_id: str) -> bool:
    """Whether the account's deletion began (its certificate exists): its trail may be gone."""
    return store.certificate(db, account_id) is not None


def deletion_certified_since(db: Client, moment: datetime) -> bool:
    return store.certified_since(db, moment)

"""Terminations, suspensions and legal holds against Firestore and Firebase Authentication.

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
from datetime import datetime
from typing import Any

import pydantic

from orderpally import audit, events, outbox, structured_logging
from orderpally.access import api_keys
from orderpally.accounts import ACCOUNTS, preferred_language
from orderpally.lifecycle import certificates, deletion
from orderpally.lifecycle.termination import (
    Basis,
    account_status_with_termination,
    can_cancel,
    company_initiated,
    takes_effect_now,
)
from orderpally.messaging.requests import EmailRequest

TERMINATIONS = "terminations"

_log = structured_logging.get_logger("orderpally.lifecycle")


class LifecycleConflict(Exception):
    """The account is not in a state that allows this; `slug` names why."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True)
class Effects:
    """The outside world the lifecycle acts on, so tests and the composition root choose it."""

    db: Any
    auth_app: Any
    send_email: Callable[[EmailRequest], object]
    publish_deletion: Callable[[str], object]
    public_base_url: str = ""  # where the deletion certificate's link points


def _account(db: Any, account_id: str) -> dict:
    snap = db.collection(ACCOUNTS).document(account_id).get()
    if not snap.exists:
        raise LifecycleConflict("account-not-found", "No such account.")
    return snap.to_dict() or {}


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
    from google.cloud import firestore

    db = effects.db
    account = _account(db, account_id)
    ref = db.collection(TERMINATIONS).document(account_id)
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

    @firestore.transactional
    def write(transaction: Any) -> tuple[dict, outbox.Staged]:
        current = ref.get(transaction=transaction)
        existing = (current.to_dict() or {}) if current.exists else {}
        if existing.get("status") in ("executing", "executed"):
            raise LifecycleConflict("already-terminated", "This account has already been terminated.")
        if existing.get("status") == "scheduled" and company_initiated(existing["basis"]) and actor.kind != "staff":
            raise LifecycleConflict(_BY_ORDERPALLY, "OrderPally has terminated this account; contact customer service.")
        status = account_snapshot(transaction, db, account_id).get("status")
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
        transaction.set(ref, record)
        transaction.update(
            db.collection(ACCOUNTS).document(account_id),
            {"status": account_status_with_termination(status, scheduled=True)},
        )
        return record, outbox.stage(transaction, db, account_id, event, notice, now)

    record, announcement = write(db.transaction())
    outbox.announce(db, announcement, effects.send_email)
    if takes_effect_now(terminate_at, now):
        # Access ends in this request; should a backing service be down, the due-terminations
        # sweep finishes what is left (the record says "scheduled" or "executing").
        with events.left_for_later("immediate termination"):
            _execute(effects, account_id, basis.value, now)
            record = {**record, "status": "executed", "executed_at": now}
    return record


_BY_ORDERPALLY = "termination-by-orderpally"


def account_snapshot(transaction: Any, db: Any, account_id: str) -> dict:
    snap = db.collection(ACCOUNTS).document(account_id).get(transaction=transaction)
    return (snap.to_dict() or {}) if snap.exists else {}


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
    from google.cloud import firestore

    db = effects.db
    account = _account(db, account_id)
    ref = db.collection(TERMINATIONS).document(account_id)

    event = audit.AuditEvent("termination.cancelled", actor, client_address, reason)
    notice = _notice(account_id, account, "termination_cancelled", now.isoformat(), {})

    @firestore.transactional
    def write(transaction: Any) -> outbox.Staged:
        current = ref.get(transaction=transaction)
        record = current.to_dict() or {} if current.exists else {}
        if not record:
            raise LifecycleConflict("no-termination", "No termination is scheduled.")
        if company_initiated(record.get("basis", "")) and actor.kind != "staff":
            raise LifecycleConflict(_BY_ORDERPALLY, "OrderPally has terminated this account; contact customer service.")
        if not can_cancel(record.get("status", ""), record["terminate_at"], now):
            raise LifecycleConflict("termination-final", "The termination date has passed; it cannot be undone.")
        status = account_snapshot(transaction, db, account_id).get("status")
        transaction.update(ref, {"status": "cancelled", "cancelled_at": now, "cancel_reason": reason})
        transaction.update(
            db.collection(ACCOUNTS).document(account_id),
            {"status": account_status_with_termination(status, scheduled=False)},
        )
        return outbox.stage(transaction, db, account_id, event, notice, now)

    outbox.announce(db, write(db.transaction()), effects.send_email)


def current_termination(db: Any, account_id: str) -> dict | None:
    snap = db.collection(TERMINATIONS).document(account_id).get()
    return snap.to_dict() if snap.exists else None


def _revoke_access(effects: Effects, account_id: str, disable: bool) -> None:
    from firebase_admin import auth

    try:
        auth.update_user(account_id, disabled=disable, app=effects.auth_app)
        if disable:
            auth.revoke_refresh_tokens(account_id, app=effects.auth_app)
    except auth.UserNotFoundError:
        pass


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
        raise LifecycleConflict("already-terminated", "This account has been terminated.")
    if suspended and status == "suspended":
        raise LifecycleConflict("already-suspended", "This account is already suspended.")
    if not suspended and status != "suspended":
        raise LifecycleConflict("not-suspended", "This account is not suspended.")
    termination = current_termination(db, account_id)
    restored = "terminating" if termination and termination.get("status") == "scheduled" else "active"
    # Sign-in first: a crash before the commit leaves the status as it was, so the same call can be made again.
    _revoke_access(effects, account_id, disable=suspended)
    action = "account.suspended" if suspended else "account.suspension_lifted"
    template = "account_suspended" if suspended else "account_suspension_lifted"
    batch = db.batch()
    batch.update(
        db.collection(ACCOUNTS).document(account_id),
        {
            "status": "suspended" if suspended else restored,
            "suspension": {"code": code, "reason": reason, "by": actor.id, "at": now} if suspended else None,
        },
    )
    announcement = outbox.stage(
        batch,
        db,
        account_id,
        audit.AuditEvent(action, actor, client_address, reason, {"code": code}),
        _notice(account_id, account, template, now.isoformat(), {"code": code or "", "reason": reason or ""}),
        now,
    )
    batch.commit()
    outbox.announce(db, announcement, effects.send_email)


def live_effects() -> Effects:
    """The deployed clients, as the routes and the due-terminations schedule use them."""
    from orderpally import clients
    from orderpally.config import settings
    from orderpally.messaging.requests import request_email

    return Effects(
        db=clients.firestore_client(),
        auth_app=clients.firebase_app(),
        send_email=request_email,
        publish_deletion=lambda account_id: events.publish(
            deletion.TOPIC, deletion.MESSAGE_TYPE, {"account_id": account_id}
        ),
        public_base_url=settings().public_base_url,
    )


def execute_due(effects: Effects, now: datetime, limit: int = 100) -> dict[str, int]:
    """Ends accounts whose termination date has come; then deletes their Firebase users once
    their deletion certificate is complete. Every step is idempotent."""
    from firebase_admin import auth
    from google.cloud.firestore import FieldFilter

    db = effects.db
    executed = users_deleted = 0
    due = (
        db.collection(TERMINATIONS)
        .where(filter=FieldFilter("status", "in", ["scheduled", "executing"]))
        .where(filter=FieldFilter("terminate_at", "<=", now))
        .limit(limit)
    )
    for snap in due.stream():
        _execute(effects, snap.id, snap.get("basis"), now)
        executed += 1

    finished = (
        db.collection(TERMINATIONS)
        .where(filter=FieldFilter("status", "==", "executed"))
        .where(filter=FieldFilter("user_deleted", "==", False))
        .limit(limit)
    )
    for snap in finished.stream():
        certificate = db.collection(deletion.CERTIFICATES).document(snap.id).get()
        if not certificate.exists or (certificate.to_dict() or {}).get("status") != "completed":
            continue
        with contextlib.suppress(auth.UserNotFoundError):
            auth.delete_user(snap.id, app=effects.auth_app)
        snap.reference.update({"user_deleted": True})
        users_deleted += 1
    return {"executed": executed, "users_deleted": users_deleted}


def _execute(effects: Effects, account_id: str, basis: str, now: datetime) -> None:
    """Ends the account's access and starts its deletion; each step may run again after a crash."""
    db = effects.db
    termination = db.collection(TERMINATIONS).document(account_id)
    termination.update({"status": "executing"})
    _revoke_access(effects, account_id, disable=True)
    api_keys.revoke_all(db, account_id, now)
    account_ref = db.collection(ACCOUNTS).document(account_id)
    account = account_ref.get().to_dict() or {}
    if account and account.get("status") != "terminated":  # not again after a crash past this commit
        batch = db.batch()
        batch.update(account_ref, {"status": "terminated", "terminated_at": now})
        # The last mail the account can get: it carries the link that shows the deletion
        # certificate once the deletion is done, since no address is kept to mail it then.
        link = certificates.issue_link(batch, db, account_id, effects.public_base_url, now)
        announcement = outbox.stage(
            batch,
            db,
            account_id,
            audit.AuditEvent("account.terminated", audit.SYSTEM),
            _notice(account_id, account, "account_terminated", "final", {"certificate_url": link}),
            now,
        )
        batch.commit()
        outbox.announce(db, announcement, effects.send_email)
    deletion.request_deletion(db, account_id, "system", f"termination: {basis}")
    effects.publish_deletion(account_id)
    termination.update({"status": "executed", "executed_at": now})
    structured_logging.log(_log, logging.INFO, "termination executed", account_id=account_id)


def place_hold(
    db: Any,
    account_id: str,
    *,
    location_ids: list[str],
    reason: str,
    authority: str,
    actor: audit.Actor,
    client_address: str | None,
    now: datetime,
) -> str:
    ref = db.collection(deletion.HOLDS).document()
    batch = db.batch()
    batch.create(
        ref,
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
        "legal_hold.placed", actor, client_address, reason, {"hold_id": ref.id, "authority": authority}
    )
    announcement = outbox.stage(batch, db, account_id, event, None, now)
    batch.commit()
    outbox.announce(db, announcement)
    return ref.id


def release_hold(
    effects: Effects, hold_id: str, *, actor: audit.Actor, client_address: str | None, now: datetime, reason: str
) -> dict:
    from google.api_core.exceptions import FailedPrecondition

    db = effects.db
    ref = db.collection(deletion.HOLDS).document(hold_id)
    snap = ref.get()
    if not snap.exists:
        raise LifecycleConflict("hold-not-found", "No such legal hold.")
    hold = snap.to_dict() or {}
    if hold.get("released_at"):
        raise LifecycleConflict("hold-released", "This hold has already been released.")
    account_id = hold["account_id"]
    batch = db.batch()
    # Only the hold as read: of two releases at once, one is recorded and the other refused.
    as_read = db.write_option(last_update_time=snap.update_time)
    batch.update(ref, {"released_at": now, "released_by": actor.id, "release_reason": reason}, option=as_read)
    event = audit.AuditEvent("legal_hold.released", actor, client_address, reason, {"hold_id": hold_id})
    announcement = outbox.stage(batch, db, account_id, event, None, now)
    try:
        batch.commit()
    except FailedPrecondition:
        raise LifecycleConflict("hold-released", "This hold has already been released.") from None
    outbox.announce(db, announcement)
    job = db.collection(deletion.JOBS).document(account_id).get()
    if job.exists and (job.to_dict() or {}).get("status") == "held":
        # A deletion waiting on this hold may finish now.
        effects.publish_deletion(account_id)
    return {**hold, "id": hold_id, "released_at": now}

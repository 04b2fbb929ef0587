"""The notices' Firestore: their collections, and every read, write, query and transaction on them.

    notices/{id}                  kind, audience, SLA link, the current version's summary,
                                  first_published_at (what the public listing orders by)
    notices/{id}/versions/{n}     every version as published; created once, never updated
    slas/{sla_id}                 the SLA's state (active | suspended) and its notices
    notice_fanouts/{id}-v{n}      one mailing per version, with its cursor and lease

The accounts a mailing walks are `orderpally.accounts`'.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import leases
from orderpally.unit_of_work import in_transaction as in_transaction  # the services run their work through the store

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, Transaction

NOTICES = "notices"
VERSIONS = "versions"
SLAS = "slas"
FANOUTS = "notice_fanouts"
OPEN_FANOUT_STATUSES = ["pending", "running", "queued"]


def _notice_ref(db: Client, notice_id: str) -> DocumentReference:
    return db.collection(NOTICES).document(notice_id)


def _version_ref(db: Client, notice_id: str, number: int) -> DocumentReference:
    return _notice_ref(db, notice_id).collection(VERSIONS).document(str(number))


def _fanout_ref(db: Client, job_id: str) -> DocumentReference:
    return db.collection(FANOUTS).document(job_id)


# --- notices and their versions ---------------------------------------------------------


def notice(db: Client, notice_id: str) -> dict[str, Any] | None:
    return _notice_ref(db, notice_id).get().to_dict()


def notice_in(transaction: Transaction, db: Client, notice_id: str) -> dict[str, Any] | None:
    """The notice as `transaction` reads it, None when there is none."""
    snapshot = _notice_ref(db, notice_id).get(transaction=transaction)
    return (snapshot.to_dict() or {}) if snapshot.exists else None


def create_notice(transaction: Transaction, db: Client, notice_id: str, record: dict[str, Any]) -> None:
    transaction.create(_notice_ref(db, notice_id), record)


def update_notice(transaction: Transaction, db: Client, notice_id: str, update: dict[str, Any]) -> None:
    transaction.update(_notice_ref(db, notice_id), update)


def create_version(transaction: Transaction, db: Client, notice_id: str, number: int, record: dict[str, Any]) -> None:
    """Writes a version once: a published version is never edited in place."""
    transaction.create(_version_ref(db, notice_id, number), record)


def version(db: Client, notice_id: str, number: int) -> dict[str, Any] | None:
    return _version_ref(db, notice_id, number).get().to_dict()


def versions(db: Client, notice_id: str) -> list[dict[str, Any]]:
    """Every version of the notice, published or not, in no particular order."""
    return [snap.to_dict() or {} for snap in _notice_ref(db, notice_id).collection(VERSIONS).get()]


def published(
    db: Client, now: datetime, *, kind: str | None, limit: int, before: tuple[datetime, str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """Notices first published by `now`, newest first, after the `before` cursor (published time, id)."""
    from google.cloud import firestore

    query = db.collection(NOTICES).where(filter=firestore.FieldFilter("first_published_at", "<=", now))
    if kind:
        query = query.where(filter=firestore.FieldFilter("kind", "==", kind))
    query = query.order_by("first_published_at", direction=firestore.Query.DESCENDING).order_by(
        "__name__", direction=firestore.Query.DESCENDING
    )
    if before:
        query = query.start_after({"first_published_at": before[0], "__name__": _notice_ref(db, before[1])})
    return [(snap.id, snap.to_dict() or {}) for snap in query.limit(limit).get()]


# --- SLAs ---------------------------------------------------------------------------------


def sla(db: Client, sla_id: str) -> dict[str, Any] | None:
    return db.collection(SLAS).document(sla_id).get().to_dict()


def sla_in(transaction: Transaction, db: Client, sla_id: str) -> dict[str, Any] | None:
    """The SLA's state as `transaction` reads it, None when there is no such SLA."""
    snapshot = db.collection(SLAS).document(sla_id).get(transaction=transaction)
    return snapshot.to_dict() if snapshot.exists else None


def set_sla(transaction: Transaction, db: Client, sla_id: str, status: str, notice_id: str, now: datetime) -> None:
    """The SLA's new state, with the notice that announced it added to its notices."""
    from google.cloud import firestore

    transaction.set(
        db.collection(SLAS).document(sla_id),
        {"status": status, "notices": firestore.ArrayUnion([notice_id]), "updated_at": now},
        merge=True,
    )


# --- mailings (fan-out jobs) --------------------------------------------------------------


def create_fanout(transaction: Transaction, db: Client, job_id: str, record: dict[str, Any]) -> None:
    """Written in the version's own transaction: a published version is never left unmailed."""
    transaction.create(_fanout_ref(db, job_id), record)


def claim_fanout(db: Client, job_id: str, now: datetime, lease: timedelta) -> leases.Claim:
    """Leases the mailing to this run. `finished` is "missing" when there is no such mailing,
    "done" when it has been sent; `busy` while another run holds it."""

    def finished(job: dict[str, Any], exists: bool) -> str | None:
        if not exists:
            return "missing"
        return "done" if job.get("status") == "done" else None

    return leases.claim(
        db,
        _fanout_ref(db, job_id),
        now,
        lease,
        finished=finished,
        fields=lambda job: {"status": "running", "updated_at": now},
    )


def save_fanout_progress(
    db: Client, job_id: str, cursor: str | None, requested: int, scanned: int, now: datetime, lease: timedelta
) -> None:
    """A page is out: the cursor moves past it, and the lease is extended."""
    from google.cloud import firestore

    _fanout_ref(db, job_id).update(
        {
            "cursor": cursor,
            "requested": firestore.Increment(requested),
            "scanned": firestore.Increment(scanned),
            "updated_at": now,
            "lease_until": now + lease,
        }
    )


def finish_fanout(db: Client, job_id: str, cursor: str | None, requested: int, scanned: int, now: datetime) -> None:
    """The last page is out: the mailing is done, and its lease ends."""
    from google.cloud import firestore

    leases.release(
        None,
        _fanout_ref(db, job_id),
        cursor=cursor,
        requested=firestore.Increment(requested),
        scanned=firestore.Increment(scanned),
        updated_at=now,
        status="done",
        finished_at=now,
    )


def hand_over_fanout(db: Client, job_id: str, now: datetime) -> None:
    """Ends this run's lease on an unfinished mailing, queued for the run that continues it."""
    leases.release(None, _fanout_ref(db, job_id), status="queued", updated_at=now)


def fanouts_to_release(db: Client, limit: int, only: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(job_id, job) of the mailings not done (up to `limit`), or of `only` when it exists."""
    from google.cloud import firestore

    jobs = db.collection(FANOUTS)
    if only:
        found = [snap for snap in [jobs.document(only).get()] if snap.exists]
    else:
        open_jobs = firestore.FieldFilter("status", "in", OPEN_FANOUT_STATUSES)
        found = jobs.where(filter=open_jobs).limit(limit).get()
    return [(snap.id, snap.to_dict() or {}) for snap in found]


def mark_fanout_queued(db: Client, job_id: str, now: datetime) -> None:
    _fanout_ref(db, job_id).update({"status": "queued", "updated_at": now})

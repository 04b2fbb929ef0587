"""The lifecycle's Firestore: its collections, and every read, write and transaction on them.

`terminations/{account_id}`               the account's current termination
`legal_holds/{hold_id}`                   legal holds; deletion leaves what they cover
`deletion_jobs/{account_id}`              the deletion job's progress and lease
`deletion_certificates/{account_id}`      what the deletion did (it outlives the account)
`deletion_certificate_links/{sha256}`     the secret links that show a certificate
`closed_account_reads/{auto}`             staff reads of accounts whose trail takes no more entries
`billing_accounts/{account_id}`           the billing balance, with `billing_events/{sequence}`
`archive_quotas/{account_id}`             the archive limits' counts
`content_exports/{export_id}`             content export requests

The generic walks over the data map's locations (the deletion job, the retention purge,
the export's archive) read and write whatever the map lists; they stay with the job
(`deletion.py`, `export.py`), on the database they are given. The accounts themselves are
`orderpally.accounts`'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from orderpally import leases
from orderpally.unit_of_work import in_batch as in_batch  # the services run their work through the store
from orderpally.unit_of_work import in_transaction as in_transaction

if TYPE_CHECKING:
    from google.cloud.firestore import (
        Client,
        DocumentReference,
        DocumentSnapshot,
        Query,
        Transaction,
        WriteBatch,
    )

    from orderpally.lifecycle.data_map import Location

TERMINATIONS = "terminations"
HOLDS = "legal_holds"
JOBS = "deletion_jobs"
CERTIFICATES = "deletion_certificates"
LINKS = "deletion_certificate_links"
CLOSED_ACCOUNT_READS = "closed_account_reads"
BILLING_ACCOUNTS = "billing_accounts"
BILLING_EVENTS = "billing_events"  # sub-collection: the applied events, for the records
EXPORTS = "content_exports"

T = TypeVar("T")


def _data(snap: Any) -> dict[str, Any] | None:
    return (snap.to_dict() or {}) if snap.exists else None


# --- terminations ------------------------------------------------------------------


def _termination_ref(db: Client, account_id: str) -> DocumentReference:
    return db.collection(TERMINATIONS).document(account_id)


def termination(db: Client, account_id: str, transaction: Transaction | None = None) -> dict[str, Any] | None:
    """The account's termination; read inside `transaction` when given."""
    return _data(_termination_ref(db, account_id).get(transaction=transaction))


def set_termination(writer: Any, db: Client, account_id: str, record: dict[str, Any]) -> None:
    writer.set(_termination_ref(db, account_id), record)


def update_termination(db: Client, account_id: str, fields: dict[str, Any], writer: Any = None) -> None:
    """Updates the termination, through `writer` (a batch or transaction) when given."""
    ref = _termination_ref(db, account_id)
    if writer is None:
        ref.update(fields)
    else:
        writer.update(ref, fields)


def due_terminations(db: Client, now: datetime, limit: int) -> Iterator[tuple[str, str]]:
    """(account id, basis) of the terminations whose date has come and that are not done."""
    from google.cloud.firestore import FieldFilter

    due = (
        db.collection(TERMINATIONS)
        .where(filter=FieldFilter("status", "in", ["scheduled", "executing"]))
        .where(filter=FieldFilter("terminate_at", "<=", now))
        .limit(limit)
    )
    for snap in due.stream():
        yield snap.id, snap.get("basis")


def executed_with_user_left(db: Client, limit: int) -> Iterator[str]:
    """The accounts terminated whose Firebase user has not been deleted yet."""
    from google.cloud.firestore import FieldFilter

    finished = (
        db.collection(TERMINATIONS)
        .where(filter=FieldFilter("status", "==", "executed"))
        .where(filter=FieldFilter("user_deleted", "==", False))
        .limit(limit)
    )
    for snap in finished.stream():
        yield snap.id


# --- legal holds -------------------------------------------------------------------


def create_hold(writer: Any, db: Client, hold: dict[str, Any]) -> str:
    """Creates a hold through `writer`; returns its new id."""
    ref = db.collection(HOLDS).document()
    writer.create(ref, hold)
    return ref.id


def hold(db: Client, hold_id: str) -> tuple[dict[str, Any], Any] | None:
    """The hold and its update time (to write it only as read), None when there is none."""
    snap = db.collection(HOLDS).document(hold_id).get()
    return ((snap.to_dict() or {}), snap.update_time) if snap.exists else None


def release_hold(
    db: Client, hold_id: str, fields: dict[str, Any], as_of: Any, also: Callable[[WriteBatch], T]
) -> T | None:
    """Writes the release, with what `also` writes, only if the hold is still as it was read at
    `as_of`; None when it was not (of two releases at once, one is recorded)."""
    from google.api_core.exceptions import FailedPrecondition

    batch = db.batch()
    as_read = db.write_option(last_update_time=as_of)
    batch.update(db.collection(HOLDS).document(hold_id), fields, option=as_read)
    result = also(batch)
    try:
        batch.commit()
    except FailedPrecondition:
        return None
    return result


def active_holds(db: Client, account_id: str) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = db.collection(HOLDS).where(filter=FieldFilter("account_id", "==", account_id))
    holds = [{"id": snap.id, **(snap.to_dict() or {})} for snap in query.stream()]
    return [hold for hold in holds if not hold.get("released_at")]


def all_active_holds(db: Client) -> list[dict[str, Any]]:
    holds = [{"id": snap.id, **(snap.to_dict() or {})} for snap in db.collection(HOLDS).stream()]
    return [hold for hold in holds if not hold.get("released_at")]


# --- deletion jobs and certificates ---------------------------------------------------


def _job_ref(db: Client, account_id: str) -> DocumentReference:
    return db.collection(JOBS).document(account_id)


def create_deletion_job(db: Client, account_id: str, requested_by: str, reason: str) -> bool:
    """Creates the account's deletion job unless one exists; returns whether it was created."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import firestore

    try:
        _job_ref(db, account_id).create(
            {
                "account_id": account_id,
                "status": "pending",
                "location_index": 0,
                "counts": {},
                "held": {},
                "requested_by": requested_by,
                "reason": reason,
                "requested_at": firestore.SERVER_TIMESTAMP,
                "lease_until": None,
            }
        )
    except AlreadyExists:
        return False
    return True


def deletion_job(db: Client, account_id: str) -> dict[str, Any] | None:
    return _data(_job_ref(db, account_id).get())


_MISSING = object()


def claim_deletion_job(db: Client, account_id: str, now: datetime, duration: timedelta) -> leases.Claim:
    """Takes the job's lease and marks it running. Not taken: `finished` is the job as stored
    when it is completed, `exists` False when there is no job, `busy` while another holds it."""

    def finished(job: dict[str, Any], exists: bool) -> Any:
        if not exists:
            return _MISSING
        return job if job.get("status") == "completed" else None

    def fields(job: dict[str, Any]) -> dict[str, Any]:
        update: dict[str, Any] = {"status": "running"}
        if not job.get("started_at"):
            update["started_at"] = now
        return update

    return leases.claim(db, _job_ref(db, account_id), now, duration, finished=finished, fields=fields)


def release_deletion_job(db: Client, account_id: str) -> None:
    """Lets the next delivery take the job at once."""
    leases.release(None, _job_ref(db, account_id))


def advance_deletion_job(db: Client, account_id: str, location_index: int) -> None:
    _job_ref(db, account_id).update({"location_index": location_index})


def count_in_deletion_job(writer: Any, db: Client, account_id: str, location_id: str, counts: dict[str, int]) -> None:
    """Adds a chunk's counts to the job through the chunk's own batch."""
    from google.cloud import firestore

    ref = _job_ref(db, account_id)
    for key, n in counts.items():
        writer.update(ref, {f"counts.{location_id}.{key}": firestore.Increment(n)})


def finish_deletion_job(db: Client, account_id: str, fields: dict[str, Any]) -> None:
    """Records the job's end and releases its lease, in one commit."""
    ref = _job_ref(db, account_id)
    batch = db.batch()
    batch.update(ref, fields)  # an update: `held` replaces what an earlier run found
    leases.release(batch, ref)
    batch.commit()


def write_certificate(db: Client, account_id: str, certificate: dict[str, Any]) -> None:
    """Stores the certificate, certified now (the server's time)."""
    from google.cloud import firestore

    db.collection(CERTIFICATES).document(account_id).set({**certificate, "certified_at": firestore.SERVER_TIMESTAMP})


def certificate(db: Client, account_id: str) -> dict[str, Any] | None:
    return _data(db.collection(CERTIFICATES).document(account_id).get())


def certified_since(db: Client, moment: datetime) -> bool:
    """Whether any account's deletion was certified after `moment`."""
    from google.cloud.firestore import FieldFilter

    query = db.collection(CERTIFICATES).where(filter=FieldFilter("certified_at", ">", moment)).limit(1)
    return any(True for _ in query.stream())


def add_certificate_link(writer: Any, db: Client, digest: str, account_id: str, now: datetime) -> None:
    writer.set(db.collection(LINKS).document(digest), {"account_id": account_id, "created_at": now})


def certificate_link_account(db: Client, digest: str) -> str | None:
    """The account whose certificate the link with this digest shows."""
    link = _data(db.collection(LINKS).document(digest).get())
    return None if link is None else link["account_id"]


def add_closed_account_read(db: Client, read: dict[str, Any]) -> None:
    db.collection(CLOSED_ACCOUNT_READS).add(read)


def closed_account_reads(db: Client, account_id: str) -> list[dict[str, Any]]:
    """The staff reads kept for the account once its trail was closed, in no particular order."""
    from google.cloud.firestore import FieldFilter

    query = db.collection(CLOSED_ACCOUNT_READS).where(filter=FieldFilter("account_id", "==", account_id))
    return [snap.to_dict() or {} for snap in query.stream()]


# --- billing -------------------------------------------------------------------------


def _billing_ref(db: Client, account_id: str) -> DocumentReference:
    return db.collection(BILLING_ACCOUNTS).document(account_id)


def billing_document(db: Client, account_id: str, transaction: Transaction | None = None) -> dict[str, Any] | None:
    """The account's billing document; inside `transaction` when given, so a concurrent event conflicts with it."""
    snap = _billing_ref(db, account_id).get(transaction=transaction)
    return snap.to_dict() if snap.exists else None


def apply_billing_event(
    db: Client,
    account_id: str,
    sequence: int,
    event: dict[str, Any],
    decide: Callable[[dict[str, Any] | None], tuple[str, dict[str, Any]]],
) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """In one transaction: reads the billing document, asks `decide` what the event does
    (applied | duplicate | waiting, the fields to write), and writes it.

    Returns (outcome, the document as read, the fields written)."""
    from google.cloud import firestore

    ref = _billing_ref(db, account_id)

    def update(transaction: Transaction) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        snap = ref.get(transaction=transaction)
        stored = snap.to_dict() if snap.exists else None
        outcome, fields = decide(stored)
        if outcome == "duplicate":
            return outcome, stored, {}
        fields["updated_at"] = firestore.SERVER_TIMESTAMP
        # merge: a waiting event only adds its marks to what is stored.
        transaction.set(ref, fields, merge=True)
        if outcome == "applied":
            applied = {**event, "applied_at": firestore.SERVER_TIMESTAMP}
            transaction.set(ref.collection(BILLING_EVENTS).document(str(sequence)), applied)
        return outcome, stored, fields

    return in_transaction(db, update)


def applied_billing_events(db: Client, account_id: str, limit: int) -> list[dict[str, Any]]:
    from google.cloud import firestore

    query = (
        _billing_ref(db, account_id)
        .collection(BILLING_EVENTS)
        .order_by("sequence", direction=firestore.Query.DESCENDING)
        .limit(limit)
    )
    return [snap.to_dict() or {} for snap in query.stream()]


def has_billing(db: Client, account_id: str) -> bool:
    return bool(_billing_ref(db, account_id).get().exists)


# --- content exports -------------------------------------------------------------------


def export_ref(db: Client, export_id: str) -> DocumentReference:
    return db.collection(EXPORTS).document(export_id)


def create_export(writer: Any, db: Client, export_id: str, record: dict[str, Any]) -> None:
    writer.create(export_ref(db, export_id), record)


def export(db: Client, export_id: str) -> dict[str, Any] | None:
    return export_ref(db, export_id).get().to_dict()


# --- the data map's locations ------------------------------------------------------------
# Deletion, the retention purge and the export walk every location the data map names,
# whichever capability owns it: these are the reads they make of them.


def documents_in(db: Client, path: str, order_by: str | None = None) -> Iterator[DocumentSnapshot]:
    """Every document of the collection at `path` (a record's sub-collection), in `order_by`'s order."""
    collection = db.collection(path)
    return (collection.order_by(order_by) if order_by else collection).stream()


def document_refs_in(db: Client, path: str) -> list[DocumentReference]:
    """Every document of the collection at `path`, those with only sub-collections included."""
    return list(db.collection(path).list_documents())


def document_at(db: Client, path: str) -> DocumentReference:
    return db.document(path)


def location_documents(db: Client, location: Location, account_id: str, limit: int | None = None) -> list[Any]:
    """The account's documents at a `document`, `collection` or `owned` location (up to `limit`):
    what is left of them, since each deletion chunk removes or pseudonymises what it read."""
    from google.cloud.firestore import FieldFilter

    if location.kind == "document":
        snap = db.document(location.resolve(account_id)).get()
        return [snap] if snap.exists else []
    query: Any
    if location.kind == "collection":
        query = db.collection(location.resolve(account_id))
    else:
        name = location.collection or ""  # the data map's validator requires it of an owned location
        base = db.collection_group(name) if location.group else db.collection(name)
        query = base.where(filter=FieldFilter(location.owner, "==", account_id))
    return list((query.limit(limit) if limit else query).stream())


def pages(query: Query, size: int) -> Iterator[list[DocumentSnapshot]]:
    """The query's documents, a page of `size` at a time (the query is ordered)."""
    last = None
    while True:
        page = list((query.start_after(last) if last else query).limit(size).stream())
        if not page:
            return
        last = page[-1]
        yield page


def retained_past(db: Client, collection: str, group: bool, day: str) -> Query:
    """Retained records of `collection` (or of the group) whose retention date is `day` or before."""
    from google.cloud.firestore import FieldFilter

    base = db.collection_group(collection) if group else db.collection(collection)
    return base.where(filter=FieldFilter("retained_until", "<=", day)).order_by("retained_until")


def ownerless_before(db: Client, location: Location, bound: datetime) -> Query:
    """Records of an ownerless location nobody owns, dated before `bound`."""
    from google.cloud.firestore import FieldFilter

    return (
        db.collection(location.collection or "")
        .where(filter=FieldFilter(location.owner, "==", None))
        .where(filter=FieldFilter(location.date_field, "<", bound))
        .order_by(location.date_field)
    )


def deferred(db: Client, location: Location, limit: int) -> list[Any]:
    """Records the deletion job left for later, their `deferred_until` field now true."""
    from google.cloud.firestore import FieldFilter

    field = location.deferred_until or ""
    query = db.collection(location.collection or "").where(filter=FieldFilter(field, "==", True))
    return list(query.limit(limit).stream())


def write_in_batches(db: Client, writes: list[tuple[str, Any, dict | None]], max_writes: int) -> None:
    """Commits ("set" | "update" | "delete", ref, data) writes in order, `max_writes` a batch.

    A move (set, then delete) never straddles two batches, so a crash leaves no document twice."""
    batch, pending = db.batch(), 0
    for index, (op, ref, data) in enumerate(writes):
        if op == "set":
            batch.set(ref, data or {})
        elif op == "update":
            batch.update(ref, data or {})
        else:
            batch.delete(ref)
        pending += 1
        moving = op == "set" and index + 1 < len(writes) and writes[index + 1][0] == "delete"
        if pending >= max_writes and not moving:
            batch.commit()
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()

"""The deletion job of one account, driven by the data map (agreement 3.2(a), 3.2(b)(i)).

Durable and resumable by construction: every query asks for the work that is
*left* (documents still owned by the account), and each chunk's writes and the
job's counters commit in one batch, so a crash or a duplicate delivery at any
point re-runs only what did not commit. A job works in bounded chunks, paced
by Firestore's ramp-up rule, and republishes itself to continue when its
invocation budget is spent. Held locations are left untouched and reported;
retained classes are pseudonymised with their retention date. The certificate
(`deletion_certificates/{account_id}`) outlives the account.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pydantic

from orderpally import structured_logging
from orderpally.lifecycle import rules
from orderpally.lifecycle.data_map import DataMap, Location

JOBS = "deletion_jobs"
CERTIFICATES = "deletion_certificates"
HOLDS = "legal_holds"
TOPIC = "account-deletion"
MESSAGE_TYPE = "account_deletion.requested"
LEASE = timedelta(minutes=5)

_log = structured_logging.get_logger("orderpally.lifecycle.deletion")


class DeletionMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    account_id: str = pydantic.Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Budget:
    chunk_size: int = 200  # well under a batch's 500 writes, counters included
    chunks_per_invocation: int = 25


@dataclass(frozen=True)
class Ports:
    """What the job needs from the outside, so tests can pace and crash it."""

    db: Any
    storage: Any
    buckets: dict[str, str]  # data-map bucket name -> real bucket
    pseudonym_key: bytes
    continue_later: Callable[[str], None]  # republish the job's message
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    # Test hook: called before each chunk commits; raise to simulate a crash there.
    fault: Callable[[str], None] | None = None


class JobBusy(Exception):
    """Another delivery holds this job's lease; retry later."""


def request_deletion(db: Any, account_id: str, requested_by: str, reason: str) -> bool:
    """Creates the account's deletion job unless one exists; returns whether it was created."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import firestore

    try:
        db.collection(JOBS).document(account_id).create(
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


def _lease(db: Any, account_id: str, now: datetime) -> dict | None:
    from google.cloud import firestore

    ref = db.collection(JOBS).document(account_id)

    @firestore.transactional
    def take(transaction: Any) -> dict | None:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists:
            return None
        job = snapshot.to_dict() or {}
        if job.get("status") == "completed":
            return job
        lease_until = job.get("lease_until")
        if lease_until and lease_until > now:
            raise JobBusy(account_id)
        update = {"lease_until": now + LEASE, "status": "running"}
        if not job.get("started_at"):
            update["started_at"] = now
            job["started_at"] = now
        transaction.update(ref, update)
        return {**job, **update}

    return take(db.transaction())


def _active_holds(db: Any, account_id: str) -> list[dict]:
    from google.cloud.firestore import FieldFilter

    query = db.collection(HOLDS).where(filter=FieldFilter("account_id", "==", account_id))
    holds = [{"id": snap.id, **(snap.to_dict() or {})} for snap in query.stream()]
    return [hold for hold in holds if not hold.get("released_at")]


class _Run:
    def __init__(self, ports: Ports, data_map: DataMap, budget: Budget, account_id: str, job: dict) -> None:
        self.ports = ports
        self.map = data_map
        self.budget = budget
        self.account_id = account_id
        self.job = job
        self.job_ref = ports.db.collection(JOBS).document(account_id)
        self.chunks = 0
        self.terminated_on = ports.now().astimezone(UTC).date()

    # --- one chunk of one location -----------------------------------------------

    def _commit(self, location: Location, batch: Any, counts: dict[str, int]) -> None:
        """Commits a chunk's writes and the job's counters together, or neither."""
        from google.cloud import firestore

        counts = {key: n for key, n in counts.items() if n}
        for key, n in counts.items():
            batch.update(self.job_ref, {f"counts.{location.id}.{key}": firestore.Increment(n)})
        if self.ports.fault:
            self.ports.fault(location.id)
        batch.commit()
        seen = self.job.setdefault("counts", {}).setdefault(location.id, {})
        for key, n in counts.items():
            seen[key] = seen.get(key, 0) + n

    def _pace(self, ops: int) -> None:
        allowed = rules.allowed_ops_per_second(self.job["started_at"], self.ports.now())
        self.ports.sleep(ops / allowed)

    def _documents_chunk(self, location: Location) -> int:
        """Handles up to one chunk of Firestore documents; returns how many it touched."""
        from google.cloud.firestore import FieldFilter

        db = self.ports.db
        retention = self.map.retention_of(location)
        if location.kind == "document":
            snap = db.document(location.resolve(self.account_id)).get()
            docs = [snap] if snap.exists else []
        elif location.kind == "collection":
            docs = list(db.collection(location.resolve(self.account_id)).limit(self.budget.chunk_size).stream())
        else:
            query = db.collection(location.collection).where(
                filter=FieldFilter(location.owner_field, "==", self.account_id)
            )
            docs = list(query.limit(self.budget.chunk_size).stream())
        if not docs:
            return 0
        batch = db.batch()
        deleted = pseudonymised = 0
        for snap in docs:
            data = snap.to_dict() or {}
            keep_for_other_party = location.kind == "owned" and self._other_party_keeps(location, data)
            if retention.action == "delete" and not keep_for_other_party:
                batch.delete(snap.reference)
                deleted += 1
                continue
            # The data map allows keeping only owned documents, which always have an owner field.
            updates = rules.pseudonymised_fields(
                location.owner_field or "", location.personal_fields, self.account_id, self.ports.pseudonym_key
            )
            if retention.action == "retain_pseudonymised":
                day = rules.record_day(data.get(location.dated_by or ""), self.terminated_on)
                until = rules.retained_until(day, retention.years or 0, retention.from_annual_closing)
                current = data.get("retained_until")
                updates["retained_until"] = max(until.isoformat(), current) if current else until.isoformat()
                updates["retention_basis"] = retention.legal_basis
            batch.update(snap.reference, updates)
            pseudonymised += 1
        self._commit(location, batch, {"deleted": deleted, "pseudonymised": pseudonymised})
        self._pace(len(docs))
        return len(docs)

    @staticmethod
    def _other_party_keeps(location: Location, data: dict) -> bool:
        """A shared document stays while the other party is a real account, or it is retained."""
        other = data.get(location.shared_with) if location.shared_with else None
        other_is_live = isinstance(other, str) and bool(other) and not other.startswith(rules.PSEUDONYM_PREFIX)
        return other_is_live or bool(data.get("retained_until"))

    def _storage_chunk(self, location: Location) -> int:
        bucket_name = self.ports.buckets[location.bucket or ""]
        blobs = list(
            self.ports.storage.list_blobs(
                bucket_name, prefix=location.resolve(self.account_id), max_results=self.budget.chunk_size
            )
        )
        if not blobs:
            return 0
        from google.api_core.exceptions import NotFound

        for blob in blobs:
            with contextlib.suppress(NotFound):  # deleted by an earlier, crashed attempt
                blob.delete()
        # Objects cannot join a Firestore batch: a crash here may leave the count short, never an object.
        self._commit(location, self.ports.db.batch(), {"deleted": len(blobs)})
        return len(blobs)

    # --- the whole job -------------------------------------------------------------

    def run(self) -> str:
        from google.cloud import firestore

        held: dict[str, dict] = {}
        start = int(self.job.get("location_index", 0))
        for index in range(start, len(self.map.locations)):
            location = self.map.locations[index]
            while True:
                # Read before every chunk: a hold placed while the job runs stops it within one chunk.
                hold = rules.covered_by_hold(location.id, _active_holds(self.ports.db, self.account_id))
                if hold:
                    held[location.id] = {
                        "hold_id": hold["id"],
                        "reason": hold.get("reason"),
                        "authority": hold.get("authority"),
                    }
                    break
                if self.chunks >= self.budget.chunks_per_invocation:
                    return self._pause()
                touched = (
                    self._storage_chunk(location) if location.kind == "storage" else self._documents_chunk(location)
                )
                if touched == 0:
                    break
                self.chunks += 1
            # A location only counts as done when no hold skipped it or one before it.
            if not held:
                self.job_ref.update({"location_index": index + 1})
        return self._finish(held, firestore)

    def _pause(self) -> str:
        self.job_ref.update({"lease_until": None})
        self.ports.continue_later(self.account_id)
        structured_logging.log(_log, logging.INFO, "deletion paused to continue", account_id=self.account_id)
        return "continued"

    def _finish(self, held: dict[str, dict], firestore: Any) -> str:
        job = self.job_ref.get().to_dict() or {}
        status = "held" if held else "completed"
        locations = {}
        for location in self.map.locations:
            retention = self.map.retention_of(location)
            entry: dict[str, Any] = {
                "kind": location.kind,
                "retention_class": location.retention,
                "counts": job.get("counts", {}).get(location.id, {}),
            }
            if retention.action == "retain_pseudonymised":
                # Each record has its own date; none is kept past what one dated today would be.
                latest = rules.retained_until(self.terminated_on, retention.years or 0, retention.from_annual_closing)
                entry["retained_until_latest"] = latest.isoformat()
                entry["retention_years"] = retention.years
                entry["counted_from"] = "annual closing" if retention.from_annual_closing else "record date"
                entry["legal_basis"] = retention.legal_basis
            if location.id in held:
                entry["held"] = held[location.id]
            locations[location.id] = entry
        self.ports.db.collection(CERTIFICATES).document(self.account_id).set(
            {
                "account_id": self.account_id,
                "status": status,
                "requested_at": job.get("requested_at"),
                "started_at": job.get("started_at"),
                "certified_at": firestore.SERVER_TIMESTAMP,
                "locations": locations,
            }
        )
        self.job_ref.update({"status": status, "held": held, "lease_until": None, "finished_at": self.ports.now()})
        structured_logging.log(_log, logging.INFO, "deletion finished", account_id=self.account_id, status=status)
        return status


def run_job(ports: Ports, data_map: DataMap, account_id: str, budget: Budget = Budget()) -> str:
    """Runs (or continues) the account's job; returns completed | held | continued | missing."""
    job = _lease(ports.db, account_id, ports.now())
    if job is None:
        return "missing"
    if job.get("status") == "completed":
        return "completed"
    run = _Run(ports, data_map, budget, account_id, job)
    try:
        return run.run()
    except Exception:
        # Let a redelivery take over at once instead of waiting out the lease.
        run.job_ref.update({"lease_until": None})
        raise


def purge_retained(db: Any, data_map: DataMap, pseudonym_key: bytes, today: date, limit: int = 400) -> int:
    """Deletes retained, pseudonymised records whose retention date has passed, unless held.

    A record whose other party is still a live account is kept for that party:
    only its retention marks are removed. Held records are passed over, page by page, so
    however many there are they never stall the purge of the rest; at most `limit`
    records are changed per collection and run.
    """
    from google.cloud import firestore
    from google.cloud.firestore import FieldFilter

    holds = [snap.to_dict() or {} for snap in db.collection(HOLDS).stream()]
    held_pseudonyms = {
        rules.pseudonym(hold["account_id"], pseudonym_key) for hold in holds if not hold.get("released_at")
    }
    purged = 0
    for collection in sorted({loc.collection for loc in data_map.locations if loc.kind == "owned"}):
        owned = [loc for loc in data_map.locations if loc.collection == collection]
        expired = (
            db.collection(collection)
            .where(filter=FieldFilter("retained_until", "<=", today.isoformat()))
            .order_by("retained_until")
        )
        changed, last = 0, None
        while changed < limit:
            page = list((expired.start_after(last) if last else expired).limit(PURGE_PAGE).stream())
            if not page:
                break
            last = page[-1]
            batch, pending = db.batch(), 0
            for snap in page:
                data = snap.to_dict() or {}
                parties = [data.get(loc.owner_field) for loc in owned]
                if any(p in held_pseudonyms for p in parties) or changed + pending >= limit:
                    continue
                live = [p for p in parties if isinstance(p, str) and p and not p.startswith(rules.PSEUDONYM_PREFIX)]
                if live:
                    batch.update(
                        snap.reference,
                        {"retained_until": firestore.DELETE_FIELD, "retention_basis": firestore.DELETE_FIELD},
                    )
                else:
                    batch.delete(snap.reference)
                    purged += 1
                pending += 1
            if pending:
                batch.commit()
            changed += pending
    return purged


PURGE_PAGE = 400  # under Firestore's 500 writes a batch

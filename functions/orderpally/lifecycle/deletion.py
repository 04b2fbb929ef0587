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

from orderpally import fields, structured_logging
from orderpally.lifecycle import rules, store
from orderpally.lifecycle.data_map import Child, DataMap, Location
from orderpally.lifecycle.store import CERTIFICATES as CERTIFICATES
from orderpally.lifecycle.store import HOLDS as HOLDS
from orderpally.lifecycle.store import JOBS as JOBS

TOPIC = "account-deletion"
MESSAGE_TYPE = "account_deletion.requested"
LEASE = timedelta(minutes=5)

_log = structured_logging.get_logger("orderpally.lifecycle.deletion")


class DeletionMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    account_id: fields.AccountId


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
    continue_later: Callable[[str], object]  # republish the job's message
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    # Test hook: called before each chunk commits; raise to simulate a crash there.
    fault: Callable[[str], None] | None = None


MAX_WRITES = 400  # per batch, under Firestore's 500


def _write_in_batches(db: Any, writes: list[tuple[str, Any, dict | None]]) -> None:
    store.write_in_batches(db, writes, MAX_WRITES)


def _field_path(name: str) -> str:
    from google.cloud.firestore_v1 import field_path

    return field_path.FieldPath(name).to_api_repr()


def _proof_of_mail(db: Any, ref: Any, account_id: str) -> dict:
    """What the delivery ledger says about the mail this record proves, before the ledger goes."""
    from orderpally.incidents import service as incidents

    return incidents.breach_proof(db, ref.parent.parent.id, account_id)


class JobBusy(Exception):
    """Another delivery holds this job's lease; retry later."""


def request_deletion(db: Any, account_id: str, requested_by: str, reason: str) -> bool:
    """Creates the account's deletion job unless one exists; returns whether it was created."""
    return store.create_deletion_job(db, account_id, requested_by, reason)


def _lease(db: Any, account_id: str, now: datetime) -> dict | None:
    """The job, leased to this delivery and running; as stored when completed; None when there is none."""
    claim = store.claim_deletion_job(db, account_id, now, LEASE)
    if not claim.exists:
        return None
    if claim.busy:
        raise JobBusy(account_id)
    return claim.entry


class _Run:
    def __init__(self, ports: Ports, data_map: DataMap, budget: Budget, account_id: str, job: dict) -> None:
        self.ports = ports
        self.map = data_map
        self.budget = budget
        self.account_id = account_id
        self.job = job
        self.chunks = 0
        self.terminated_on = ports.now().astimezone(UTC).date()

    # --- one chunk of one location -----------------------------------------------

    def _commit(self, location: Location, batch: Any, counts: dict[str, int]) -> None:
        """Commits a chunk's writes and the job's counters together, or neither."""
        counts = {key: n for key, n in counts.items() if n}
        store.count_in_deletion_job(batch, self.ports.db, self.account_id, location.id, counts)
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
        db = self.ports.db
        retention = self.map.retention_of(location)
        if location.deferred_until:
            return 0  # the retention purge pseudonymises it once `deferred_until` is true
        docs = store.location_documents(db, location, self.account_id, self.budget.chunk_size)
        if not docs:
            return 0
        batch = db.batch()
        deleted = pseudonymised = 0
        ops = len(docs)
        for snap in docs:
            data = snap.to_dict() or {}
            keep_for_other_party = location.kind == "owned" and self._other_party_keeps(location, data)
            if retention.action == "delete" and not keep_for_other_party:
                batch.delete(snap.reference)
                deleted += 1
                continue
            kept = dict(data)
            if retention.action == "retain_pseudonymised":
                # What hangs off the record is stripped first, each commit re-runnable: the record
                # itself changes last, and until then the next query finds it again.
                ops += self._strip_dependents(location, snap.reference, data)
                if location.proof_of_mail:
                    kept |= _proof_of_mail(db, snap.reference, self.account_id)
            # The data map allows keeping only owned documents, which always have an owner field.
            after = rules.pseudonymised_record(
                kept, location.owner_field, location.personal_fields, self.account_id, self.ports.pseudonym_key
            )
            if retention.action == "retain_pseudonymised":
                day = rules.record_day(data.get(location.dated_by or ""), self.terminated_on)
                until = rules.retained_until(day, retention.years or 0, retention.from_annual_closing)
                current = data.get("retained_until")
                after["retained_until"] = max(until.isoformat(), current) if current else until.isoformat()
                after["retention_basis"] = retention.legal_basis
            self._write_pseudonymised(batch, snap.reference, data, after)
            pseudonymised += 1
        self._commit(location, batch, {"deleted": deleted, "pseudonymised": pseudonymised})
        self._pace(ops)
        return len(docs)

    def _write_pseudonymised(self, writer: Any, ref: Any, before: dict, after: dict) -> None:
        """Updates the document, or moves it when its own id names the account (2 writes)."""
        new_id = rules.replace_account(
            ref.id, self.account_id, rules.pseudonym(self.account_id, self.ports.pseudonym_key)
        )
        if new_id != ref.id:
            writer.set(ref.parent.document(new_id), after)
            writer.delete(ref)
        else:
            changes = rules.changed_fields(before, after)
            if changes:
                writer.update(ref, {_field_path(k): v for k, v in changes.items()})

    def _strip_dependents(self, location: Location, ref: Any, data: dict) -> int:
        """Deletes the record's Storage objects and pseudonymises its sub-collections; returns the writes."""
        from google.api_core.exceptions import NotFound

        writes = 0
        if location.objects:
            bucket = self.ports.storage.bucket(self.ports.buckets[location.bucket or ""])
            for name in rules.values_at(data, location.objects):
                with contextlib.suppress(NotFound):  # gone already: an earlier, crashed attempt
                    bucket.blob(str(name)).delete()
                writes += 1
        for child in location.children:
            writes += self._strip_child(location, child, ref)
        return writes

    def _strip_child(self, location: Location, child: Child, parent: Any) -> int:
        from orderpally import audit

        db = self.ports.db
        entries = child.resolve(child.collection, parent.path)
        key, account = self.ports.pseudonym_key, self.account_id
        # A document this account owns through a location of its own is left to that location.
        owners = [
            loc.owner_field for loc in self.map.locations if loc.group and loc.collection == entries.rsplit("/", 1)[-1]
        ]
        writes: list[tuple[str, Any, dict | None]] = []
        if child.chain_head:
            head = store.document_at(db, child.resolve(child.chain_head, parent.path))
            audit.link(audit.chain_of(db, head, entries))  # nothing left pending to be linked with the id later
            previous = audit.GENESIS
            for snap in store.documents_in(db, entries, order_by="seq"):
                body = snap.to_dict() or {}
                recorded_at = body.pop("recorded_at", None)
                new = rules.pseudonymised_record(body, None, child.personal_fields, account, key)
                new["prev_hash"] = previous
                # Re-sealed over the pseudonymised content, so the chain verifies again.
                new["hash"] = previous = audit.entry_hash(new)
                if new != body:
                    writes.append(("set", snap.reference, {**new, "recorded_at": recorded_at}))
            head_snap = head.get()
            if head_snap.exists and (writes or head_snap.get("hash") != previous):
                writes.append(("update", head, {"hash": previous, "updated_at": self.ports.now()}))
        else:
            for snap in store.documents_in(db, entries):
                body = snap.to_dict() or {}
                if any(body.get(field) == account for field in owners if field):
                    continue
                new = rules.pseudonymised_record(body, None, child.personal_fields, account, key)
                new_id = rules.replace_account(snap.id, account, rules.pseudonym(account, key))
                if new_id != snap.id:
                    writes += [("set", snap.reference.parent.document(new_id), new), ("delete", snap.reference, None)]
                elif new != body:
                    writes.append(("set", snap.reference, new))
        _write_in_batches(db, writes)
        return len(writes)

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
        held: dict[str, dict] = {}
        start = int(self.job.get("location_index", 0))
        for index in range(start, len(self.map.locations)):
            location = self.map.locations[index]
            while True:
                # Read before every chunk: a hold placed while the job runs stops it within one chunk.
                hold = rules.covered_by_hold(location.id, store.active_holds(self.ports.db, self.account_id))
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
                store.advance_deletion_job(self.ports.db, self.account_id, index + 1)
        return self._finish(held)

    def _pause(self) -> str:
        store.release_deletion_job(self.ports.db, self.account_id)
        self.ports.continue_later(self.account_id)
        structured_logging.log(_log, logging.INFO, "deletion paused to continue", account_id=self.account_id)
        return "continued"

    def _finish(self, held: dict[str, dict]) -> str:
        job = store.deletion_job(self.ports.db, self.account_id) or {}
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
            if location.deferred_until:
                entry["deferred"] = f"pseudonymised by the retention purge once {location.deferred_until}"
            if location.id in held:
                entry["held"] = held[location.id]
            locations[location.id] = entry
        store.write_certificate(
            self.ports.db,
            self.account_id,
            {
                "account_id": self.account_id,
                "status": status,
                "requested_at": job.get("requested_at"),
                "started_at": job.get("started_at"),
                "locations": locations,
            },
        )
        store.finish_deletion_job(
            self.ports.db, self.account_id, {"status": status, "held": held, "finished_at": self.ports.now()}
        )
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
        store.release_deletion_job(ports.db, account_id)
        raise


def purge_retained(
    db: Any,
    data_map: DataMap,
    pseudonym_key: bytes,
    today: date,
    limit: int = 400,
    *,
    storage: Any,
    buckets: dict[str, str],
) -> int:
    """Ends retained records whose retention date has passed, unless held; returns how many went.

    A record goes with its sub-collections and Storage objects (`children`, `objects`), which go
    first: a crash part-way leaves the record, and the next run finds it again. A record whose
    other party is still a live account is kept for that party: only its retention marks are
    removed. Reports without an account (`ownerless`) end by their own date. Records deferred
    by the deletion job are pseudonymised here once they are ready. Held records are passed
    over, page by page, so however many there are they never stall the purge of the rest; at
    most `limit` records are changed per collection and run.
    """
    holds = store.all_active_holds(db)
    purge = _Purge(db, storage, buckets, data_map, pseudonym_key, today, limit, holds)
    for location in data_map.locations:
        if location.deferred_until:
            purge.pseudonymise_deferred(location)
    purged = 0
    for collection, locations in sorted(data_map.owned_by_collection().items()):
        purged += purge.expired(collection, locations)
    for location in data_map.locations:
        if location.ownerless:
            purged += purge.ownerless(location)
    return purged


PURGE_PAGE = 400  # under Firestore's 500 writes a batch


class _Purge:
    def __init__(
        self,
        db: Any,
        storage: Any,
        buckets: dict[str, str],
        data_map: DataMap,
        key: bytes,
        today: date,
        limit: int,
        holds: list[dict],
    ) -> None:
        self.db, self.storage, self.buckets, self.map = db, storage, buckets, data_map
        self.key, self.today, self.limit, self.holds = key, today, limit, holds
        self.held_pseudonyms = {rules.pseudonym(hold["account_id"], key) for hold in holds if hold.get("account_id")}

    def _delete_dependents(self, locations: list[Location], snap: Any) -> None:
        """The record's objects, sub-collections and chain heads; each step may run again."""
        from google.api_core.exceptions import NotFound

        from orderpally import audit

        data = snap.to_dict() or {}
        writes: list[tuple[str, Any, dict | None]] = []
        seen: set[str] = set()
        for location in locations:
            if location.objects:
                bucket = self.storage.bucket(self.buckets[location.bucket or ""])
                for name in rules.values_at(data, location.objects):
                    with contextlib.suppress(NotFound):
                        bucket.blob(str(name)).delete()
            for child in location.children:
                paths = [child.resolve(child.collection, snap.reference.path)]
                head = child.resolve(child.chain_head, snap.reference.path) if child.chain_head else None
                if head:
                    paths.append(f"{head}/{audit.PENDING}")
                for path in paths:
                    if path in seen:
                        continue
                    seen.add(path)
                    writes += [("delete", ref, None) for ref in store.document_refs_in(self.db, path)]
                if head:
                    writes.append(("delete", store.document_at(self.db, head), None))
        _write_in_batches(self.db, writes)

    def expired(self, collection: str, locations: list[Location]) -> int:
        from google.cloud import firestore

        group = any(loc.group for loc in locations)
        query = store.retained_past(self.db, collection, group, self.today.isoformat())
        purged = changed = 0
        for page in store.pages(query, PURGE_PAGE):
            if changed >= self.limit:
                break
            batch, pending = self.db.batch(), 0
            for snap in page:
                data = snap.to_dict() or {}
                parties = [data.get(loc.owner_field or "") for loc in locations]
                if any(p in self.held_pseudonyms for p in parties) or changed + pending >= self.limit:
                    continue
                live = [p for p in parties if isinstance(p, str) and p and not p.startswith(rules.PSEUDONYM_PREFIX)]
                if live:
                    batch.update(
                        snap.reference,
                        {"retained_until": firestore.DELETE_FIELD, "retention_basis": firestore.DELETE_FIELD},
                    )
                else:
                    self._delete_dependents(locations, snap)
                    batch.delete(snap.reference)
                    purged += 1
                pending += 1
            if pending:
                batch.commit()
            changed += pending
        return purged

    def ownerless(self, location: Location) -> int:
        """Records nobody owns (no account, so no hold), ended `years` after their own day."""
        retention = self.map.retention_of(location)
        oldest = rules.oldest_kept_day(self.today, retention.years or 0)
        bound = datetime(oldest.year, oldest.month, oldest.day, tzinfo=UTC) + timedelta(days=1)
        purged = 0
        for page in store.pages(store.ownerless_before(self.db, location, bound), PURGE_PAGE):
            batch = self.db.batch()
            for snap in page:
                if purged >= self.limit:
                    break
                data = snap.to_dict() or {}
                day = rules.record_day(data.get(location.dated_by or ""), self.today)
                if not rules.is_expired(day, retention.years or 0, retention.from_annual_closing, self.today):
                    continue
                self._delete_dependents(self.map.owned_by_collection()[location.collection or ""], snap)
                batch.delete(snap.reference)
                purged += 1
            batch.commit()
            if purged >= self.limit:
                break
        return purged

    def pseudonymise_deferred(self, location: Location) -> int:
        """Pseudonymises the records the deletion job left until `deferred_until` became true."""
        retention = self.map.retention_of(location)
        field = location.deferred_until or ""
        done = 0
        for snap in store.deferred(self.db, location, self.limit):
            data = snap.to_dict() or {}
            account_id = data.get(location.owner_field or "")
            if not isinstance(account_id, str) or not account_id or account_id.startswith(rules.PSEUDONYM_PREFIX):
                continue
            account_holds = [hold for hold in self.holds if hold.get("account_id") == account_id]
            if rules.covered_by_hold(location.id, account_holds):
                continue
            after = rules.pseudonymised_record(
                data, location.owner_field, location.personal_fields, account_id, self.key
            )
            after.pop(field, None)  # so neither this query nor the job that waited on it finds it again
            day = rules.record_day(data.get(location.dated_by or ""), self.today)
            after["retained_until"] = rules.retained_until(
                day, retention.years or 0, retention.from_annual_closing
            ).isoformat()
            after["retention_basis"] = retention.legal_basis
            new_id = rules.replace_account(snap.id, account_id, rules.pseudonym(account_id, self.key))
            moves: list[tuple[str, Any, dict | None]] = [("set", snap.reference.parent.document(new_id), after)]
            if new_id != snap.id:
                moves.append(("delete", snap.reference, None))
            _write_in_batches(self.db, moves)  # one batch: the record moves whole, or not at all
            done += 1
        return done

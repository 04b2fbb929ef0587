"""The checkpoint log's documents; the only module that touches them.

`audit_checkpoint_log/{chunk:08d}`   the log's leaves, `CHUNK` a document, in order: each
    `{c: chain_id, s: seq, h: head_hash, d: deleted}`, a chain head as one checkpoint saw it. Leaves at or
    past the latest checkpoint's size belong to a run that crashed before signing: the next
    run writes over them.
`audit_checkpoints/{tree_size:012d}` each signed checkpoint, as published (rules.checkpoint_json)
`audit_checkpoint_runs/current`       the lease of the one run that appends

The chains' heads themselves are `orderpally.audit`'s, read through `audit.heads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import leases, unit_of_work
from orderpally.checkpoints.rules import ChainHead

if TYPE_CHECKING:
    from google.cloud.firestore import Client, WriteBatch

LOG = "audit_checkpoint_log"
CHECKPOINTS = "audit_checkpoints"
RUNS = "audit_checkpoint_runs"
RUN = "current"  # the one appender's document
# Leaves a log document holds: 140 bytes each for Firebase's 28-character uids, 250 for the
# longest (128), so a document stays under 260 kB, far under Firestore's 1 MiB. A commit of
# CHUNKS_PER_BATCH of them stays under 4 MiB, gRPC's default message limit (which the
# emulator enforces; production allows 10 MiB): 40 chunks at 100,000 chains did not.
CHUNK = 1024
CHUNKS_PER_BATCH = 12
MAX_CHAIN_ID_LENGTH = 128  # Firebase Authentication's longest uid


def _chunk_id(number: int) -> str:
    return f"{number:08d}"


def leaves(db: Client, size: int) -> list[ChainHead]:
    """The log's first `size` leaves, in order."""
    if size == 0:
        return []
    chunks = (size + CHUNK - 1) // CHUNK
    refs = [db.collection(LOG).document(_chunk_id(number)) for number in range(chunks)]
    by_id = {snap.id: snap.to_dict() or {} for snap in db.get_all(refs)}
    found: list[ChainHead] = []
    for ref in refs:
        rows = by_id.get(ref.id, {}).get("leaves") or []
        found += [ChainHead(str(row["c"]), int(row["s"]), str(row["h"]), bool(row["d"])) for row in rows]
    if len(found) < size:
        raise RuntimeError(f"the checkpoint log holds {len(found)} leaves, its checkpoint says {size}")
    return found[:size]


def write_leaves(db: Client, log: Sequence[ChainHead], first_new: int) -> None:
    """Writes the chunks that hold leaves `first_new` onwards of `log` (the whole log, in order),
    each in full, so writing them again (after a crash) gives the same documents."""
    numbers = range(first_new // CHUNK, (len(log) + CHUNK - 1) // CHUNK)
    for start in range(0, len(numbers), CHUNKS_PER_BATCH):

        def write(batch: WriteBatch, part: range = numbers[start : start + CHUNKS_PER_BATCH]) -> None:
            for number in part:
                part_of_log = log[number * CHUNK : (number + 1) * CHUNK]
                rows = [{"c": h.chain_id, "s": h.seq, "h": h.head_hash, "d": h.deleted} for h in part_of_log]
                batch.set(db.collection(LOG).document(_chunk_id(number)), {"leaves": rows})

        unit_of_work.in_batch(db, write)


def _checkpoint_id(tree_size: int) -> str:
    return f"{tree_size:012d}"


def save_checkpoint(db: Client, checkpoint: dict[str, Any]) -> None:
    db.collection(CHECKPOINTS).document(_checkpoint_id(checkpoint["tree_size"])).set(checkpoint)


def checkpoint(db: Client, tree_size: int) -> dict[str, Any] | None:
    snap = db.collection(CHECKPOINTS).document(_checkpoint_id(tree_size)).get()
    return (snap.to_dict() or {}) if snap.exists else None


def newest_checkpoints(db: Client, limit: int, below_size: int | None = None) -> list[dict[str, Any]]:
    """Signed checkpoints, largest tree first, smaller than `below_size` when given."""
    from google.cloud import firestore

    query = db.collection(CHECKPOINTS).order_by("tree_size", direction=firestore.Query.DESCENDING)
    if below_size is not None:
        query = query.where(filter=firestore.FieldFilter("tree_size", "<", below_size))
    return [snap.to_dict() or {} for snap in query.limit(limit).stream()]


def _run(db: Client) -> Any:
    return db.document(RUNS, RUN)


def claim_run(db: Client, now: datetime, lease: timedelta) -> bool:
    """Whether this run now holds the one appender's lease."""
    return leases.claim(db, _run(db), now, lease, fields=lambda entry: {"started_at": now}).taken


def release_run(db: Client, now: datetime) -> None:
    leases.release(None, _run(db), finished_at=now)

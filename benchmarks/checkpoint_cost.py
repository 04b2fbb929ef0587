"""Audit checkpoint cost: signing a checkpoint over N chains' heads, on the Firestore emulator.

Run with `make bench` (or alone); prints its rows, asserts nothing.

Writes N chain heads, then times `checkpoints.service.publish` twice, as the schedule runs
it: the first checkpoint (every head appended to the log) and, after a tenth of the heads
moved, the next (only those appended). Reported: the seconds each took against the time
to stream the N heads alone (the read any checkpoint must make) and against the schedule's
540 s timeout, and the Firestore documents each run read and wrote per chain.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import rows
import stacks

BENCHMARK = "checkpoint_cost"
PROJECT = "demo-orderpally-bench-checkpoints"
BATCH = 500
TIMEOUT_SECONDS = 540  # infra/functions.yaml, audit-checkpoint


def head_hash(chain: int, seq: int) -> str:
    return hashlib.sha256(f"{chain}:{seq}".encode()).hexdigest()


def write_heads(db, chains: range, seq: int) -> None:
    from orderpally import audit

    batch = db.batch()
    for n, chain in enumerate(chains):
        batch.set(
            db.collection(audit.CHAINS).document(f"acct-{chain:07d}"), {"seq": seq, "hash": head_hash(chain, seq)}
        )
        if n % BATCH == BATCH - 1:
            batch.commit()
            batch = db.batch()
    batch.commit()


def stream_heads(db) -> tuple[float, int]:
    from orderpally import audit

    started = time.perf_counter()
    count = sum(1 for _ in audit.heads(db))
    return time.perf_counter() - started, count


def publish(db) -> tuple[float, dict, int]:
    """(seconds, the run's result, documents read) of one checkpoint run."""
    from datetime import UTC, datetime

    from orderpally import audit
    from orderpally.checkpoints import service, signing, store

    read = 0

    def counted_heads(db):
        nonlocal read
        for head in audit.heads(db):
            read += 1
            yield head

    latest = service.history(db, 1, None)
    size = int(latest[0]["tree_size"]) if latest else 0
    ports = service.Ports(
        db=db,
        signer=signing.LocalSigner.generate(),
        origin="bench/audit",
        now=lambda: datetime.now(UTC),
        deletion_started=lambda chain_id: True,
        deleted_since=lambda moment: False,
        heads=counted_heads,
        link_pending=lambda db: None,  # nothing is staged here
    )
    started = time.perf_counter()
    result = service.publish(ports, force=True)
    seconds = time.perf_counter() - started
    # Besides the heads: the run's lease, the latest checkpoint and the log's chunks so far.
    read += 2 + -(-size // store.CHUNK)
    return seconds, result, read


def measure(n: int) -> list[rows.Row]:
    from orderpally import clients
    from orderpally.checkpoints import store

    db = clients.firestore_client()
    write_heads(db, range(n), 1)
    floor, counted = stream_heads(db)
    found = [
        rows.Row(BENCHMARK, f"stream {counted:,} chain heads (the read any checkpoint makes)", floor, "s", None, "-")
    ]
    against = f"streaming the {n:,} heads ({floor:.2f} s)"
    for run, moved in (("first checkpoint", n), ("next checkpoint, a tenth moved", n // 10)):
        if run.startswith("next"):
            write_heads(db, range(0, n, 10), 2)
        seconds, result, read = publish(db)
        chunks = -(-result["appended"] // store.CHUNK) + 1
        writes = chunks + 2  # log chunks touched, the checkpoint, the lease's release
        found += [
            rows.Row(
                BENCHMARK, f"{run} over {n:,} chains ({moved:,} appended)", seconds, "s", seconds / floor, against
            ),
            rows.Row(
                BENCHMARK,
                f"{run}: against the schedule's timeout",
                seconds,
                "s",
                seconds / TIMEOUT_SECONDS,
                f"{TIMEOUT_SECONDS} s",
            ),
            rows.Row(BENCHMARK, f"{run}: documents read per chain", read / n, "reads", None, "-"),
            rows.Row(BENCHMARK, f"{run}: documents written per 1,000 chains", 1000 * writes / n, "writes", None, "-"),
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, help="chains (default 100,000; quick 10,000)")
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    chains = args.chains or (10_000 if args.quick else 100_000)
    with stacks.firestore_emulator(args.port_offset, args.reuse_stack, PROJECT):
        measured = measure(chains)
    rows.report(measured, args.rows)


if __name__ == "__main__":
    main()

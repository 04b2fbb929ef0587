"""Audit sequencer throughput: linking staged audit entries into their hash chains, on the Firestore emulator.

Run with `make bench` (or alone); prints its rows, asserts nothing.

Stages N entries over M chains with `audit.stage` (as sign-ins do: one pending entry
each, interleaved across accounts), then times linking them all with one `audit.link`
per chain, one chain after another, as the scheduled sequencer does (per chain: a lock
create, a list, a transaction of up to 100 entries, a lock delete). Reported as entries
and chains per second, against plain batched writes of the same number of documents
(500 a commit) in the same run. A second round links a fresh set of N entries with
several chains at a time, what one sequencer instance could do, since chains are
independent of one another.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import rows
import stacks

BENCHMARK = "audit_sequencer"
PROJECT = "demo-orderpally-bench-audit"
BATCH = 500  # writes per commit, Firestore's most
CONCURRENT_CHAINS = 8


def entry_event(i: int):
    from orderpally import audit

    return audit.AuditEvent(
        action="sign_in",
        actor=audit.Actor(kind="customer", id=f"bench-{i}"),
        client_address="203.0.113.7",
        details={"method": "password", "n": i},
    )


def plain_writes(db, n: int, collection: str = "bench_plain") -> float:
    """Seconds to write n new documents of an entry's size, BATCH a commit: the floor."""
    started = time.perf_counter()
    batch = db.batch()
    for i in range(n):
        event = entry_event(i)
        batch.set(
            db.collection(collection).document(f"{i:08d}"),
            {
                "action": event.action,
                "actor": {"kind": event.actor.kind, "id": event.actor.id},
                "details": event.details,
            },
        )
        if i % BATCH == BATCH - 1:
            batch.commit()
            batch = db.batch()
    batch.commit()
    return time.perf_counter() - started


def stage(db, chains: list, n: int) -> None:
    from orderpally import audit

    batch = db.batch()
    for i in range(n):
        audit.stage(batch, chains[i % len(chains)], entry_event(i))
        if i % BATCH == BATCH - 1:
            batch.commit()
            batch = db.batch()
    batch.commit()


def link_all(chains: list, at_a_time: int) -> tuple[float, int]:
    """(seconds, entries linked) for one audit.link per chain, `at_a_time` chains at once."""
    from orderpally import audit

    started = time.perf_counter()
    if at_a_time == 1:
        linked = sum(audit.link(chain) for chain in chains)
    else:
        with ThreadPoolExecutor(max_workers=at_a_time) as pool:
            linked = sum(pool.map(audit.link, chains))
    return time.perf_counter() - started, linked


def measure(n: int, m: int) -> list[rows.Row]:
    from orderpally import audit, clients

    db = clients.firestore_client()
    plain_writes(db, min(n, 1000), "bench_warm_up")  # a fresh emulator's first commits are slow: not ours to time
    plain = n / plain_writes(db, n)
    found = [
        rows.Row(BENCHMARK, f"plain batched writes, {n:,} documents, {BATCH} a commit", plain, "docs/s", None, "-")
    ]
    against = f"plain batched writes of {n:,} documents ({plain:,.0f} docs/s)"
    for run, at_a_time in enumerate((1, CONCURRENT_CHAINS)):
        chains = [audit.account_chain(db, f"bench-{run}-{c:05d}") for c in range(m)]
        stage(db, chains, n)
        seconds, linked = link_all(chains, at_a_time)
        how = "one chain after another" if at_a_time == 1 else f"{at_a_time} chains at a time"
        complete = f"all {n:,} linked" if linked == n else f"only {linked:,} of {n:,} linked"
        found += [
            rows.Row(
                BENCHMARK,
                f"link {n:,} staged entries over {m:,} chains, {how} ({complete})",
                linked / seconds,
                "entries/s",
                linked / seconds / plain,
                against,
            ),
            rows.Row(BENCHMARK, f"the same, chains per second ({how})", m / seconds, "chains/s", None, "-"),
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, help="staged entries (default 2,000; quick 500)")
    parser.add_argument("--chains", type=int, help="chains they are spread over (default 200; quick 50)")
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    entries = args.entries or (500 if args.quick else 2_000)
    chains = args.chains or (50 if args.quick else 200)
    with stacks.firestore_emulator(args.port_offset, args.reuse_stack, PROJECT):
        measured = measure(entries, chains)
    rows.report(measured, args.rows)


if __name__ == "__main__":
    main()

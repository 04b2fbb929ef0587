"""Deletion throughput: the data-map deletion job against `recursive_delete`, on the Firestore emulator.

Run with `make bench` (or alone); prints its rows, asserts nothing.

Builds identical copies of an account with N documents spread over its audit
trail, orders and invoices, deletes one with the client library's
`recursive_delete` (plus the same owned-document queries) and the others with
the job, unpaced and ramp-paced, and reports documents per second:

- unpaced, against `recursive_delete` (the job's own overhead);
- ramp-paced, against the rate Firestore's 500/50/5 rule allows over the same run:
  at most 500 operations a second to a new collection, 50% more every 5 minutes,
  allowed(t) = 500 x 1.5^floor(t / 300 s), averaged over the run's elapsed time.
  The job budgets one operation per document it handles, so documents per second
  is the rate its pacing aims at.
"""

from __future__ import annotations

import argparse
import math
import time

import rows
import stacks

PROJECT = "demo-orderpally-bench"
# Firestore's documented ramp for new collections (500/50/5), the reference of the paced run;
# deliberately not the job's own constants (lifecycle/rules.py), which are what is measured.
RAMP_START_OPS = 500
RAMP_GROWTH = 1.5
RAMP_STEP_SECONDS = 300


def allowed_at(seconds: float) -> float:
    """Operations per second the 500/50/5 rule allows `seconds` into a run."""
    return RAMP_START_OPS * RAMP_GROWTH ** math.floor(seconds / RAMP_STEP_SECONDS)


def allowed_on_average(seconds: float) -> float:
    """The rule's allowed rate averaged over a run of `seconds`: its integral over the run, divided by it."""
    total, start = 0.0, 0.0
    while start < seconds:
        end = min(seconds, start + RAMP_STEP_SECONDS)
        total += allowed_at(start) * (end - start)
        start = end
    return total / seconds


def build(db, account_id: str, n: int) -> None:
    per = n // 3
    batch, pending = db.batch(), 0
    for i in range(n):
        if i < per:
            ref = db.collection(f"accounts/{account_id}/audit_trail").document(f"e{i}")
            data = {"action": "sign_in", "i": i}
        elif i < 2 * per:
            ref = db.document(f"orders/{account_id}-{i}")
            data = {"consumer_id": account_id, "consumer_name": "x", "store_id": f"{account_id}-gone", "amount": i}
        else:
            ref = db.document(f"invoices/{account_id}-{i}")
            data = {"account_id": account_id, "billing_name": "x", "total": i}
        batch.set(ref, data)
        pending += 1
        if pending == 500:
            batch.commit()
            batch, pending = db.batch(), 0
    db.document(f"accounts/{account_id}").set({"kind": "consumer"})
    if pending:
        batch.commit()


def delete_with_recursive_delete(db, account_id: str) -> None:
    from google.cloud.firestore import FieldFilter

    db.recursive_delete(db.document(f"accounts/{account_id}"))
    # recursive_delete takes references, not queries: owned documents go through the
    # same BulkWriter it uses internally.
    writer = db.bulk_writer()
    for collection, field in (("orders", "consumer_id"), ("invoices", "account_id")):
        for snap in db.collection(collection).where(filter=FieldFilter(field, "==", account_id)).stream():
            writer.delete(snap.reference)
    writer.close()


def delete_with_job(db, storage, account_id: str, paced: bool) -> None:
    from orderpally.lifecycle import data_map, deletion

    deletion.request_deletion(db, account_id, "bench", "benchmark")
    ports = deletion.Ports(
        db=db,
        storage=storage,
        buckets={"exports": "bench-exports", "attachments": "bench-attachments"},
        pseudonym_key=b"bench-key-bench-key-bench-key-00",
        continue_later=lambda _: None,
        sleep=time.sleep if paced else (lambda _: None),
    )
    while (
        deletion.run_job(ports, data_map.load(), account_id, deletion.Budget(chunks_per_invocation=10_000))
        == "continued"
    ):
        pass


class NoStorage:
    def list_blobs(self, *args, **kwargs):
        return []


def measure(documents: int) -> list[rows.Row]:
    from google.cloud import firestore

    db = firestore.Client(project=PROJECT)
    seconds = {}
    for label, run in (
        ("recursive_delete", lambda a: delete_with_recursive_delete(db, a)),
        ("unpaced", lambda a: delete_with_job(db, NoStorage(), a, paced=False)),
        ("paced", lambda a: delete_with_job(db, NoStorage(), a, paced=True)),
    ):
        account = f"bench-{len(seconds)}"
        build(db, account, documents)
        started = time.perf_counter()
        run(account)
        seconds[label] = time.perf_counter() - started
    rate = {label: documents / s for label, s in seconds.items()}
    allowed = allowed_on_average(seconds["paced"])
    return [
        rows.Row(
            "deletion_throughput",
            f"recursive_delete + owned-document BulkWriter, {documents:,} documents",
            rate["recursive_delete"],
            "docs/s",
            None,
            "-",
        ),
        rows.Row(
            "deletion_throughput",
            "deletion job, unpaced",
            rate["unpaced"],
            "docs/s",
            rate["unpaced"] / rate["recursive_delete"],
            f"recursive_delete on an identical copy ({rate['recursive_delete']:,.0f} docs/s)",
        ),
        rows.Row(
            "deletion_throughput",
            f"deletion job, ramp-paced ({seconds['paced']:.0f} s)",
            rate["paced"],
            "docs/s",
            rate["paced"] / allowed,
            f"Firestore's 500/50/5 ramp, averaged over the run ({allowed:,.0f} ops/s;"
            f" {allowed_at(seconds['paced']):,.0f} at its end)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, help="documents per copy (default 20,000; quick 2,000)")
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    documents = args.documents or (2_000 if args.quick else 20_000)
    with stacks.firestore_emulator(args.port_offset, args.reuse_stack, PROJECT):
        measured = measure(documents)
    rows.report(measured, args.rows)


if __name__ == "__main__":
    main()

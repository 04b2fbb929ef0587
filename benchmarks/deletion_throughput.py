"""Deletion throughput: the data-map deletion job against `recursive_delete`, on the Firestore emulator.

Run with `make bench`; prints a table, asserts nothing.

Builds two identical copies of an account with N documents spread over its
audit trail, orders and invoices, deletes one with the job and the other with
the client library's `recursive_delete` (plus the same owned-document
queries), and prints documents per second and their ratio. The job's ramp-up
pacing (500 ops/s, +50% every 5 minutes) is measured both on and off, since
production keeps it on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import local_stack  # noqa: E402

PROJECT = "demo-orderpally-bench"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=28380)
    args = parser.parse_args()

    state = ROOT / ".local" / "bench"
    proc = local_stack.ManagedProcess(
        "firestore-bench",
        ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{args.port}", "--quiet"],
        state / "firestore.log",
    )
    proc.start()
    try:
        local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{args.port}/"), proc)
        os.environ.update({"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{args.port}", "GOOGLE_CLOUD_PROJECT": PROJECT})
        from google.cloud import firestore

        db = firestore.Client(project=PROJECT)
        rows = []
        for label, run in (
            ("recursive_delete (reference)", lambda a: delete_with_recursive_delete(db, a)),
            ("deletion job, unpaced", lambda a: delete_with_job(db, NoStorage(), a, paced=False)),
            ("deletion job, ramp-paced", lambda a: delete_with_job(db, NoStorage(), a, paced=True)),
        ):
            account = f"bench-{len(rows)}"
            build(db, account, args.documents)
            started = time.perf_counter()
            run(account)
            seconds = time.perf_counter() - started
            rows.append((label, args.documents / seconds))
        reference = rows[0][1]
        print(f"deletion throughput, {args.documents} documents, Firestore emulator")
        print(f"{'method':<32} {'docs/s':>10} {'ratio':>8}")
        for label, rate in rows:
            print(f"{label:<32} {rate:>10.0f} {rate / reference:>7.2f}x")
    finally:
        proc.stop()


if __name__ == "__main__":
    main()

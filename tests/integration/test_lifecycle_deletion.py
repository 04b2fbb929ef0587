"""The deletion job against the Firestore and Storage emulators.

Each test builds an account with content in every data-map location, some of
it shared with another account, then inspects the emulators directly.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest

from orderpally import clients
from orderpally.config import settings
from orderpally.lifecycle import data_map, deletion, rules

KEY = b"test-pseudonym-key-0123456789abcdef"
ALICE, BOB = "alice", "bob"
DEAD = rules.pseudonym("carol", KEY)  # a consumer deleted long ago


class Crash(Exception):
    pass


def buckets() -> dict[str, str]:
    return {"exports": settings().exports_bucket, "attachments": settings().attachments_bucket}


def make_ports(**overrides) -> deletion.Ports:
    continued: list[str] = overrides.pop("continued", [])
    return deletion.Ports(
        db=clients.firestore_client(),
        storage=clients.storage_client(),
        buckets=buckets(),
        pseudonym_key=KEY,
        continue_later=continued.append,
        sleep=lambda seconds: None,
        **overrides,
    )


def build_accounts() -> None:
    db = clients.firestore_client()
    for uid in (ALICE, BOB):
        db.document(f"accounts/{uid}").set({"kind": "store", "email": f"{uid}@example.test", "display_name": uid})
        for i in range(3):
            db.collection(f"accounts/{uid}/audit_trail").add({"action": f"sign_in {i}"})
    for i in range(3):  # Alice sells to Bob
        db.document(f"orders/a-sells-{i}").set(
            {
                "store_id": ALICE,
                "store_name": "Alice's shop",
                "store_email": "alice@example.test",
                "consumer_id": BOB,
                "consumer_name": "Bob",
                "shipping_address": "Bob's address",
                "amount": 100 + i,
            }
        )
    for i in range(2):  # Alice buys from Bob
        db.document(f"orders/a-buys-{i}").set(
            {
                "store_id": BOB,
                "store_name": "Bob's shop",
                "consumer_id": ALICE,
                "consumer_name": "Alice",
                "consumer_phone": "0912345678",
                "shipping_address": "Alice's address",
                "comment": "+1",
                "amount": 500 + i,
            }
        )
    db.document("orders/a-sells-dead").set(
        {"store_id": ALICE, "store_name": "Alice's shop", "consumer_id": DEAD, "amount": 7}
    )
    for uid in (ALICE, BOB):
        for i in range(2):
            db.document(f"invoices/{uid}-{i}").set(
                {"account_id": uid, "billing_name": uid.title(), "billing_email": f"{uid}@x.test", "total": 1000 + i}
            )
    storage = clients.storage_client()
    for bucket_name in buckets().values():
        for uid in (ALICE, BOB):
            storage.bucket(bucket_name).blob(f"{uid}/file.bin").upload_from_string(b"data")


DEFAULT_BUDGET = deletion.Budget()


def run_until_done(ports: deletion.Ports, budget: deletion.Budget = DEFAULT_BUDGET, limit: int = 50) -> str:
    for _ in range(limit):
        outcome = deletion.run_job(ports, data_map.load(), ALICE, budget)
        if outcome != "continued":
            return outcome
    raise AssertionError("the job never finished")


def snapshot_of_bob() -> dict:
    db = clients.firestore_client()
    return {
        "profile": db.document(f"accounts/{BOB}").get().to_dict(),
        "audit": len(list(db.collection(f"accounts/{BOB}/audit_trail").stream())),
        "invoices": [db.document(f"invoices/{BOB}-{i}").get().to_dict() for i in range(2)],
        "objects": sorted(
            b.name for name in buckets().values() for b in clients.storage_client().list_blobs(name, prefix=f"{BOB}/")
        ),
    }


def assert_alice_is_gone_except_what_is_retained() -> None:
    db = clients.firestore_client()
    alias = rules.pseudonym(ALICE, KEY)
    assert not db.document(f"accounts/{ALICE}").get().exists
    assert list(db.collection(f"accounts/{ALICE}/audit_trail").stream()) == []
    for i in range(3):  # her sales are accounting vouchers: kept 5 years, pseudonymised; Bob's side intact
        order = db.document(f"orders/a-sells-{i}").get().to_dict()
        assert order["store_id"] == alias
        assert order["store_name"] is None
        assert order["store_email"] is None
        assert order["retained_until"] == rules.retained_until(datetime.now(UTC).date(), 5).isoformat()
        assert order["consumer_name"] == "Bob"
        assert order["amount"] == 100 + i
    for i in range(2):  # her purchases: Bob's copy stays, her personal data goes
        order = db.document(f"orders/a-buys-{i}").get().to_dict()
        assert order["consumer_id"] == alias
        assert {order[f] for f in ("consumer_name", "consumer_phone", "shipping_address", "comment")} == {None}
        assert order["store_name"] == "Bob's shop"
        assert "retained_until" not in order
    assert db.document("orders/a-sells-dead").get().to_dict()["store_id"] == alias
    for i in range(2):
        invoice = db.document(f"invoices/{ALICE}-{i}").get().to_dict()
        assert invoice["account_id"] == alias
        assert invoice["billing_name"] is None
        assert invoice["total"] == 1000 + i
        assert invoice["retained_until"] == rules.retained_until(datetime.now(UTC).date(), 10).isoformat()
    for name in buckets().values():
        assert list(clients.storage_client().list_blobs(name, prefix=f"{ALICE}/")) == []
    # Nothing anywhere still names her.
    for collection in ("orders", "invoices"):
        for snap in db.collection(collection).stream():
            assert ALICE not in {v for v in snap.to_dict().values() if isinstance(v, str)}, snap.id


pytestmark = pytest.mark.usefixtures("emulators")


def test_deletion_removes_everything_but_retained_records_and_leaves_others_intact():
    build_accounts()
    bob_before = snapshot_of_bob()
    assert deletion.request_deletion(clients.firestore_client(), ALICE, "alice", "customer request")
    assert not deletion.request_deletion(clients.firestore_client(), ALICE, "alice", "again")
    assert run_until_done(make_ports()) == "completed"
    assert_alice_is_gone_except_what_is_retained()
    assert snapshot_of_bob() == bob_before
    certificate = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()
    assert certificate["status"] == "completed"
    assert certificate["locations"]["audit_trail"]["counts"] == {"deleted": 3}
    assert certificate["locations"]["orders_as_store"]["counts"] == {"pseudonymised": 4}
    assert certificate["locations"]["orders_as_consumer"]["counts"] == {"pseudonymised": 2}
    assert certificate["locations"]["invoices"]["legal_basis"]
    assert certificate["locations"]["exports"]["counts"] == {"deleted": 1}
    # Running a completed job again changes nothing.
    assert deletion.run_job(make_ports(), data_map.load(), ALICE) == "completed"


@pytest.mark.parametrize("crash_at", ["account_profile", "audit_trail", "orders_as_store", "invoices", "exports"])
def test_a_crash_at_any_location_is_finished_by_the_redelivery(crash_at):
    build_accounts()
    bob_before = snapshot_of_bob()
    deletion.request_deletion(clients.firestore_client(), ALICE, "alice", "customer request")
    calls = {"n": 0}

    def crash_on_second_chunk(location_id: str) -> None:
        if location_id == crash_at:
            calls["n"] += 1
            # Mid-way where the location has several chunks, else at its only chunk.
            if calls["n"] == (1 if crash_at in ("account_profile", "exports") else 2):
                raise Crash(location_id)

    small = deletion.Budget(chunk_size=1, chunks_per_invocation=1000)
    with pytest.raises(Crash):
        run_until_done(make_ports(fault=crash_on_second_chunk), small)
    assert run_until_done(make_ports(), small) == "completed"
    assert_alice_is_gone_except_what_is_retained()
    assert snapshot_of_bob() == bob_before
    counts = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()["locations"]
    assert counts["audit_trail"]["counts"] == {"deleted": 3}  # a rolled-back chunk is not counted
    assert counts["invoices"]["counts"] == {"pseudonymised": 2}


def test_the_job_continues_itself_in_bounded_invocations():
    build_accounts()
    deletion.request_deletion(clients.firestore_client(), ALICE, "alice", "customer request")
    continued: list[str] = []
    ports = make_ports(continued=continued)
    assert run_until_done(ports, deletion.Budget(chunk_size=2, chunks_per_invocation=2)) == "completed"
    assert len(continued) >= 3
    assert set(continued) == {ALICE}
    assert_alice_is_gone_except_what_is_retained()


def test_concurrent_deliveries_do_not_run_the_job_twice():
    build_accounts()
    deletion.request_deletion(clients.firestore_client(), ALICE, "alice", "customer request")
    gate = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver():
        gate.wait()
        try:
            outcomes.append(deletion.run_job(make_ports(), data_map.load(), ALICE))
        except deletion.JobBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["busy", "completed"], ["completed", "completed"])
    assert_alice_is_gone_except_what_is_retained()


def test_a_legal_hold_keeps_its_data_untouched_until_released():
    build_accounts()
    db = clients.firestore_client()
    db.document(f"{deletion.HOLDS}/h1").set(
        {"account_id": ALICE, "location_ids": ["invoices"], "reason": "tax audit", "authority": "MOF ref 115-123"}
    )
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "held"
    assert db.document(f"invoices/{ALICE}-0").get().to_dict()["billing_name"] == "Alice"
    assert not db.document(f"accounts/{ALICE}").get().exists
    certificate = db.document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()
    assert certificate["status"] == "held"
    assert certificate["locations"]["invoices"]["held"]["authority"] == "MOF ref 115-123"

    db.document(f"{deletion.HOLDS}/h1").update({"released_at": datetime.now(UTC)})
    assert run_until_done(make_ports()) == "completed"
    assert_alice_is_gone_except_what_is_retained()


def test_purge_deletes_expired_retained_records_unless_held_or_still_another_partys():
    build_accounts()
    db = clients.firestore_client()
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    run_until_done(make_ports())
    far_future = date(2100, 1, 1)

    db.document(f"{deletion.HOLDS}/h2").set({"account_id": ALICE, "reason": "court order", "authority": "court"})
    assert deletion.purge_retained(db, data_map.load(), KEY, far_future) == 0
    assert db.document(f"invoices/{ALICE}-0").get().exists

    db.document(f"{deletion.HOLDS}/h2").update({"released_at": datetime.now(UTC)})
    purged = deletion.purge_retained(db, data_map.load(), KEY, far_future)
    assert not db.document(f"invoices/{ALICE}-0").get().exists
    assert not db.document("orders/a-sells-dead").get().exists  # both parties gone
    kept = db.document("orders/a-sells-0").get().to_dict()  # still Bob's purchase
    assert kept["consumer_id"] == BOB
    assert "retained_until" not in kept
    assert purged == 3
    assert db.document(f"invoices/{BOB}-0").get().to_dict()["billing_name"] == "Bob"


def test_a_hold_placed_while_the_job_runs_stops_it_within_one_chunk():
    build_accounts()
    db = clients.firestore_client()
    for i in range(20):
        db.collection(f"accounts/{ALICE}/audit_trail").add({"action": f"more {i}"})
    deletion.request_deletion(db, ALICE, "alice", "customer request")

    def place_hold_at_first_chunk(location_id: str) -> None:
        if location_id == "audit_trail" and not db.document(f"{deletion.HOLDS}/late").get().exists:
            db.document(f"{deletion.HOLDS}/late").set({"account_id": ALICE, "reason": "court", "authority": "court"})

    outcome = run_until_done(make_ports(fault=place_hold_at_first_chunk), deletion.Budget(chunk_size=5))
    assert outcome == "held"
    # The chunk being written when the hold came went; nothing after it.
    assert len(list(db.collection(f"accounts/{ALICE}/audit_trail").stream())) == 23 - 5
    assert db.document(f"invoices/{ALICE}-0").get().to_dict()["billing_name"] == "Alice"


def test_retention_counts_from_each_records_own_fiscal_year():
    build_accounts()
    db = clients.firestore_client()
    db.document(f"orders/{ALICE}-2019").set(
        {
            "store_id": ALICE,
            "store_name": "Alice's shop",
            "consumer_id": DEAD,
            "created_at": datetime(2019, 3, 1, tzinfo=UTC),
        }
    )
    db.document(f"invoices/{ALICE}-2020").set(
        {"account_id": ALICE, "billing_name": "Alice", "issued_at": "2020-06-01", "total": 9}
    )
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "completed"
    # 5 years after the closing of 2019 (30 April 2020), 10 after that of 2020: not the termination's year.
    assert db.document(f"orders/{ALICE}-2019").get().to_dict()["retained_until"] == "2025-04-30"
    assert db.document(f"invoices/{ALICE}-2020").get().to_dict()["retained_until"] == "2031-04-30"
    deletion.purge_retained(db, data_map.load(), KEY, datetime.now(UTC).date())
    assert not db.document(f"orders/{ALICE}-2019").get().exists
    assert db.document(f"invoices/{ALICE}-2020").get().exists


def test_held_expired_records_do_not_stall_the_purge_of_the_rest():
    db = clients.firestore_client()
    held, free = rules.pseudonym("held-store", KEY), rules.pseudonym("gone-store", KEY)
    writer = db.bulk_writer()
    for i in range(12):
        writer.set(db.document(f"invoices/a-held-{i:02d}"), {"account_id": held, "retained_until": "2020-01-01"})
    for i in range(3):
        writer.set(db.document(f"invoices/z-free-{i}"), {"account_id": free, "retained_until": "2020-06-01"})
    writer.close()
    db.document(f"{deletion.HOLDS}/h9").set({"account_id": "held-store", "reason": "court", "authority": "court"})
    # Pages of 5 and a limit of 5: the held records fill the first pages, and are passed over.
    original = deletion.PURGE_PAGE
    deletion.PURGE_PAGE = 5
    try:
        assert deletion.purge_retained(db, data_map.load(), KEY, date(2026, 12, 1), limit=5) == 3
    finally:
        deletion.PURGE_PAGE = original
    assert len(list(db.collection("invoices").stream())) == 12

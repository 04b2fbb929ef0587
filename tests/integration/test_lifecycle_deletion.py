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


def purge_retained(db, the_map, key, today, **options) -> int:
    """The retention purge, given the Storage the stack uses (as `main.purge_retained_records` does)."""
    return deletion.purge_retained(
        db, the_map, key, today, storage=clients.storage_client(), buckets=buckets(), **options
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
    assert purge_retained(db, data_map.load(), KEY, far_future) == 0
    assert db.document(f"invoices/{ALICE}-0").get().exists

    db.document(f"{deletion.HOLDS}/h2").update({"released_at": datetime.now(UTC)})
    purged = purge_retained(db, data_map.load(), KEY, far_future)
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
    purge_retained(db, data_map.load(), KEY, datetime.now(UTC).date())
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
        assert purge_retained(db, data_map.load(), KEY, date(2026, 12, 1), limit=5) == 3
    finally:
        deletion.PURGE_PAGE = original
    assert len(list(db.collection("invoices").stream())) == 12


# --- incidents, breach notices, anonymous reports and terminations (issue #15, finding 13) ---------

INCIDENT_AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def report_incident(reporter: str | None, with_file: bool = True) -> str:
    """An incident as the service writes it: history with a staff reply, a file, and (signed in) the reporter's id."""
    from orderpally import audit
    from orderpally.incidents import rules as incident_rules
    from orderpally.incidents import service

    db = clients.firestore_client()
    report = service.Report(
        category="suspected_data_leak",
        description="Orders of my shop appear on a public paste site.",
        contact_email=None if reporter else "anon@example.com",
    )
    who = service.Reporter(reporter, f"{reporter}@example.test" if reporter else None, "203.0.113.9")
    reference = service.submit(db, report, who, None, incident_rules.parse_deadlines(""), INCIDENT_AT).reference
    actor = audit.Actor("customer", reporter) if reporter else audit.Actor("anonymous", "reporter")
    service.history(db, reference, "incident.received", actor, "203.0.113.9", category="suspected_data_leak")
    if with_file:
        name = f"{reporter or 'anonymous'}/incidents/{reference}/abc.txt"
        clients.storage_client().bucket(settings().attachments_bucket).blob(name).upload_from_string(b"evidence")
        entry = {"object": name, "declared_type": "text/plain", "size": 8, "sha256": "e" * 64}
        service.add_attachment(db, reference, entry, 5)
    staff = audit.Actor("staff", "sec-1", "security")
    note = service.Note(text=f"Dear {reporter or 'reporter'}, we have removed the paste.", visibility="public")
    service.add_note(db, reference, note, staff, INCIDENT_AT)
    return reference


def history_chain(reference: str):
    from orderpally import audit
    from orderpally.incidents import service

    return service.chain(clients.firestore_client(), reference), audit


def notify_breach(reference: str, account_id: str, sent: bool = True) -> None:
    """The breach's recipient record and its delivery, as mark_breach and the mail pipeline leave them."""
    from orderpally.incidents import service
    from orderpally.messaging import delivery

    db = clients.firestore_client()
    db.document(f"incidents/{reference}/breach_recipients/{account_id}").set(
        {"account_id": account_id, "requested_at": INCIDENT_AT}
    )
    if sent:
        db.document(f"{delivery.DELIVERIES}/{delivery.delivery_id(service.breach_key(reference, account_id))}").set(
            {"account_id": account_id, "template": "breach_notice", "status": "sent", "sent_at": INCIDENT_AT}
        )


def walk(db) -> list:
    """Every document under every collection, sub-collections included (and parents that exist only by them)."""
    found, pending = [], list(db.collections())
    while pending:
        collection = pending.pop()
        for ref in collection.list_documents():
            found.append(ref)
            pending.extend(ref.collections())
    return found


def assert_nothing_names(account_id: str) -> None:
    """No document, path or Storage object anywhere names the account, except the deletion's own records."""
    db = clients.firestore_client()
    own = {deletion.JOBS, deletion.CERTIFICATES, deletion.HOLDS}
    for ref in walk(db):
        if ref.path.split("/")[0] in own:
            continue
        snap = ref.get()
        assert not rules.mentions(ref.path, account_id), ref.path
        assert not rules.mentions(snap.to_dict() or {}, account_id), ref.path
    for name in buckets().values():
        assert [b.name for b in clients.storage_client().list_blobs(name) if rules.mentions(b.name, account_id)] == []


def test_a_retained_incident_names_the_reporter_nowhere_and_its_history_still_verifies():
    build_accounts()
    db = clients.firestore_client()
    reference = report_incident(ALICE)
    notify_breach(reference, BOB)  # another account's notice under her report stays as it is
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "completed"

    alias = rules.pseudonym(ALICE, KEY)
    incident = db.document(f"incidents/{reference}").get().to_dict()
    assert incident["reporter_account_id"] == alias
    assert incident["description"] is None
    assert incident["contact_email"] is None
    assert incident["attachments"] == [{"object": None, "declared_type": "text/plain", "size": 8, "sha256": "e" * 64}]
    assert incident["retained_until"] == "2031-03-02"
    entries = [s.to_dict() for s in db.collection(f"incidents/{reference}/history").order_by("seq").stream()]
    assert [e["action"] for e in entries] == ["incident.received", "incident.reply"]
    assert {e["actor"]["id"] for e in entries} <= {alias, "sec-1"}
    assert {e["client_address"] for e in entries} == {None}
    assert all(e["details"].get("text") is None for e in entries)
    chain, audit = history_chain(reference)
    assert audit.verify(clients.firestore_client(), reference, chain).intact
    assert db.document(f"incidents/{reference}/breach_recipients/{BOB}").get().exists
    assert_nothing_names(ALICE)
    # The certificate says what kind of thing went, and how much; never which.
    certificate = db.document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()
    assert certificate["locations"]["incidents_reported"]["counts"] == {"pseudonymised": 1}
    assert not rules.mentions({k: v for k, v in certificate.items() if k != "account_id"}, ALICE)
    assert reference not in str(certificate)


def test_the_proof_of_a_breach_notice_outlives_the_account_pseudonymised():
    from orderpally.incidents import service

    build_accounts()
    db = clients.firestore_client()
    reference = report_incident(BOB, with_file=False)
    notify_breach(reference, ALICE)
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "completed"

    alias = rules.pseudonym(ALICE, KEY)
    assert not db.document(f"incidents/{reference}/breach_recipients/{ALICE}").get().exists
    kept = db.document(f"incidents/{reference}/breach_recipients/{alias}").get().to_dict()
    assert kept["account_id"] == alias
    assert kept["status"] == "sent"
    assert kept["notified_at"] == INCIDENT_AT
    assert kept["retained_until"] == "2031-03-02"
    assert kept["retention_basis"]
    assert [row["status"] for row in service.breach_recipients(db, reference)] == ["sent"]
    assert_nothing_names(ALICE)
    # Purged when its own retention ends, whatever becomes of the incident.
    assert purge_retained(db, data_map.load(), KEY, date(2031, 3, 2)) == 1
    assert not db.document(f"incidents/{reference}/breach_recipients/{alias}").get().exists
    assert db.document(f"incidents/{reference}").get().exists  # Bob's report, Bob's account: his


def test_a_purged_incident_takes_its_history_chain_recipients_and_files_with_it():
    build_accounts()
    db = clients.firestore_client()
    reference = report_incident(ALICE)
    notify_breach(reference, BOB)
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "completed"
    assert purge_retained(db, data_map.load(), KEY, date(2031, 3, 1)) == 0
    assert db.document(f"incidents/{reference}").get().exists

    purge_retained(db, data_map.load(), KEY, date(2031, 3, 2))
    assert [ref.path for ref in walk(db) if reference in ref.path] == []


def test_anonymous_reports_and_their_files_end_five_years_after_their_day():
    db = clients.firestore_client()
    reference = report_incident(None)
    bucket = settings().attachments_bucket
    assert purge_retained(db, data_map.load(), KEY, date(2031, 3, 1)) == 0
    assert db.document(f"incidents/{reference}").get().exists

    assert purge_retained(db, data_map.load(), KEY, date(2031, 3, 2)) == 1
    assert [ref.path for ref in walk(db) if reference in ref.path] == []
    assert list(clients.storage_client().list_blobs(bucket, prefix="anonymous/")) == []


def test_a_termination_record_is_kept_pseudonymised_once_the_user_is_deleted_and_purged_after_15_years():
    db = clients.firestore_client()
    record = {
        "account_id": ALICE,
        "basis": "3.1(b)(ii)(A)",
        "status": "executed",
        "requested_by": {"kind": "staff", "id": "admin-1", "role": "admin"},
        "reason": "Alice kept selling counterfeit goods",
        "requested_at": INCIDENT_AT,
        "terminate_at": INCIDENT_AT,
        "executed_at": INCIDENT_AT,
        "user_deleted": False,
    }
    db.document(f"terminations/{ALICE}").set(record)
    deletion.request_deletion(db, ALICE, "system", "termination")
    assert run_until_done(make_ports()) == "completed"
    # The due-terminations job still needs it to delete the sign-in user.
    assert db.document(f"terminations/{ALICE}").get().to_dict() == record
    purge_retained(db, data_map.load(), KEY, date(2026, 12, 1))
    assert db.document(f"terminations/{ALICE}").get().exists

    db.document(f"terminations/{ALICE}").update({"user_deleted": True})
    db.document(f"{deletion.HOLDS}/h1").set({"account_id": ALICE, "reason": "court", "authority": "court"})
    purge_retained(db, data_map.load(), KEY, date(2026, 12, 1))
    assert db.document(f"terminations/{ALICE}").get().exists  # held
    db.document(f"{deletion.HOLDS}/h1").update({"released_at": datetime.now(UTC)})
    purge_retained(db, data_map.load(), KEY, date(2026, 12, 1))

    alias = rules.pseudonym(ALICE, KEY)
    assert not db.document(f"terminations/{ALICE}").get().exists
    kept = db.document(f"terminations/{alias}").get().to_dict()
    assert kept["account_id"] == alias
    assert kept["reason"] is None
    assert kept["basis"] == "3.1(b)(ii)(A)"
    assert "user_deleted" not in kept
    assert kept["retained_until"] == "2041-03-02"
    assert_nothing_names(ALICE)
    purge_retained(db, data_map.load(), KEY, date(2041, 3, 1))
    assert db.document(f"terminations/{alias}").get().exists
    purge_retained(db, data_map.load(), KEY, date(2041, 3, 2))
    assert not db.document(f"terminations/{alias}").get().exists


@pytest.mark.parametrize("crash_at", ["incidents_reported", "breach_notices"])
def test_a_crash_while_pseudonymising_an_incident_is_finished_by_the_redelivery(crash_at):
    build_accounts()
    db = clients.firestore_client()
    own = [report_incident(ALICE) for _ in range(2)]
    other = report_incident(BOB, with_file=False)
    notify_breach(other, ALICE)
    notify_breach(own[0], ALICE)
    deletion.request_deletion(db, ALICE, "alice", "customer request")
    calls = {"n": 0}

    def crash(location_id: str) -> None:
        if location_id == crash_at:
            calls["n"] += 1
            if calls["n"] == 2 or crash_at == "breach_notices":
                raise Crash(location_id)

    small = deletion.Budget(chunk_size=1, chunks_per_invocation=1000)
    with pytest.raises(Crash):
        run_until_done(make_ports(fault=crash), small)
    assert run_until_done(make_ports(), small) == "completed"
    assert_nothing_names(ALICE)
    for reference in own:
        chain, audit = history_chain(reference)
        assert audit.verify(clients.firestore_client(), reference, chain).intact
    alias = rules.pseudonym(ALICE, KEY)
    for reference in (other, own[0]):
        assert db.document(f"incidents/{reference}/breach_recipients/{alias}").get().to_dict()["status"] == "sent"
    counts = db.document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()["locations"]
    assert counts["incidents_reported"]["counts"] == {"pseudonymised": 2}
    assert counts["breach_notices"]["counts"] == {"pseudonymised": 2}


def test_the_walk_finds_sub_collections_the_data_map_does_not_classify():
    from support import firestore_tree

    db = clients.firestore_client()
    report_incident(None, with_file=False)
    db.document("incidents/OPI-GONE/stray/1").set({"x": 1})  # under a parent that does not exist
    paths = firestore_tree.collection_paths(db)
    assert {"incidents", "incidents/OPI-GONE/stray"} <= paths
    assert any(p.endswith("/history") for p in paths)
    assert not data_map.load().classifies("incidents/OPI-GONE/stray")
    assert all(data_map.load().classifies(p) for p in paths - {"incidents/OPI-GONE/stray"})
    db.document("incidents/OPI-GONE/stray/1").delete()  # the suite's own check runs after this test


def test_the_export_holds_every_document_the_deletion_then_removes_or_keeps_pseudonymised():
    """The customer's export (3.2(b)) and the deletion (3.2(a)) read the same locations: each
    document the job counts at a location was in the export beforehand, breach notices under
    any incident (a collection group) included, and nothing of another account's."""
    import io
    import json
    import zipfile

    from orderpally.lifecycle import export

    build_accounts()
    db = clients.firestore_client()
    own = report_incident(ALICE, with_file=False)
    notify_breach(own, ALICE)
    notify_breach(report_incident(BOB, with_file=False), ALICE)
    notify_breach(own, BOB)
    the_map = data_map.load()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        exported = export.write_archive(db, clients.storage_client(), buckets(), the_map, ALICE, archive)
    with zipfile.ZipFile(out) as archive:
        breach_lines = [json.loads(line) for line in archive.read("breach_notices.jsonl").splitlines()]
    assert sorted(line["data"]["account_id"] for line in breach_lines) == [ALICE, ALICE]

    deletion.request_deletion(db, ALICE, "alice", "customer request")
    assert run_until_done(make_ports()) == "completed"
    certified = db.document(f"{deletion.CERTIFICATES}/{ALICE}").get().to_dict()["locations"]
    for location in the_map.locations:
        if location.kind == "storage" or location.deferred_until:
            continue  # objects are exported by name; deferred records are the purge's
        touched = sum(certified[location.id]["counts"].values())
        assert exported[location.id] == touched, location.id

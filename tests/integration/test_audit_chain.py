"""The hash-chained audit trail on the Firestore emulator: tampering anywhere is found."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from orderpally import audit, clients

pytestmark = pytest.mark.usefixtures("emulators")
ACTOR = audit.Actor(kind="customer", id="acct")


def fill(n: int, account: str = "acct") -> None:
    for i in range(n):
        audit.record(
            clients.firestore_client(),
            account,
            audit.AuditEvent("sign_in.succeeded", ACTOR, "203.0.113.9", None, {"i": i}),
        )


def test_an_untouched_chain_verifies():
    fill(5)
    verdict = audit.verify(clients.firestore_client(), "acct")
    assert verdict.intact
    assert verdict.entries == 5
    assert [e["seq"] for e in audit.page(clients.firestore_client(), "acct", 10)] == [5, 4, 3, 2, 1]
    assert [e["seq"] for e in audit.page(clients.firestore_client(), "acct", 2, before_seq=3)] == [2, 1]


def test_an_edited_entry_is_found():
    fill(5)
    clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(3)}").update(
        {"client_address": "198.51.100.1"}
    )
    verdict = audit.verify(clients.firestore_client(), "acct")
    assert not verdict.intact
    assert verdict.first_broken_seq == 3


def test_a_rehashed_edit_still_breaks_the_next_link():
    fill(5)
    ref = clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(2)}")
    body = ref.get().to_dict()
    body["action"] = "sign_out"
    body["hash"] = audit.entry_hash(body)  # a careful forger recomputes the hash
    ref.set(body)
    verdict = audit.verify(clients.firestore_client(), "acct")
    assert verdict.first_broken_seq == 3


@pytest.mark.parametrize(("removed", "expected"), [(2, 2), (5, 5)])
def test_a_removed_entry_is_found(removed, expected):
    fill(5)
    clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(removed)}").delete()
    verdict = audit.verify(clients.firestore_client(), "acct")
    assert not verdict.intact
    assert verdict.first_broken_seq == expected


def test_concurrent_writers_extend_one_chain():
    threads = [threading.Thread(target=fill, args=(3,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verdict = audit.verify(clients.firestore_client(), "acct")
    assert verdict.intact
    assert verdict.entries == 12


def test_a_burst_of_writers_on_one_account_links_every_entry_once():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda i: fill(1, "busy"), range(40)))
    verdict = audit.verify(clients.firestore_client(), "busy")
    assert verdict.intact
    assert verdict.entries == 40
    assert list(audit.pending(audit.account_chain(clients.firestore_client(), "busy")).stream()) == []


def leave_pending(account: str, action: str) -> None:
    """An entry written to the pending list by a writer that crashed before linking it."""
    chain = audit.account_chain(clients.firestore_client(), account)
    audit.pending(chain).document(f"20260101000000000000-{action}").set(
        {
            "action": action,
            "actor": {"kind": "customer", "id": account, "role": None},
            "client_address": None,
            "reason": None,
            "details": {},
            "at": datetime(2026, 1, 1, tzinfo=UTC),
            audit.ENTRIES_FIELD: f"accounts/{account}/audit_trail",
        }
    )


def test_an_entry_left_pending_is_linked_by_the_next_reader():
    fill(2, "crashy")
    leave_pending("crashy", "api_key.created")
    assert audit.page(clients.firestore_client(), "crashy", 10)[0]["action"] == "api_key.created"
    assert audit.verify(clients.firestore_client(), "crashy").entries == 3


def test_the_scheduled_check_links_stragglers_and_verifies_incident_chains_too():
    from datetime import UTC, datetime

    from orderpally.incidents import service

    leave_pending("straggler", "sign_in.succeeded")
    service.history(clients.firestore_client(), "OPI-AAAA-BBBB-CCCC", "incident.received", ACTOR)
    service.history(clients.firestore_client(), "OPI-AAAA-BBBB-CCCC", "incident.note", ACTOR)
    result = audit.verify_recent(clients.firestore_client(), datetime.now(UTC))
    assert result == {"checked": 2, "broken": []}
    assert audit.verify(clients.firestore_client(), "straggler").entries == 1


def test_the_scheduled_check_names_broken_chains():
    from datetime import UTC, datetime

    fill(3, "good")
    fill(3, "bad")
    clients.firestore_client().document(f"accounts/bad/audit_trail/{audit.entry_id(1)}").update({"reason": "edited"})
    result = audit.verify_recent(clients.firestore_client(), datetime.now(UTC))
    assert result == {"checked": 2, "broken": ["bad"]}


def test_a_crashed_linkers_lock_runs_out_and_the_next_writer_links_past_it():
    from datetime import timedelta

    fill(2)
    head = audit.account_chain(clients.firestore_client(), "acct").head
    lock = clients.firestore_client().collection(audit.LINK_LOCKS).document(head.id)
    lock.set({"expire_at": datetime.now(UTC) - timedelta(seconds=1)})  # a linker died holding it

    fill(1)
    assert not lock.get().exists  # cleared, taken, and let go
    assert audit.verify(clients.firestore_client(), "acct").entries == 3
    assert [e["seq"] for e in audit.page(clients.firestore_client(), "acct", 10)] == [3, 2, 1]


def test_a_live_link_lock_is_not_taken_by_another_linker():
    from datetime import timedelta

    from orderpally import leases

    db = clients.firestore_client()
    ref = db.collection(audit.LINK_LOCKS).document("lease-probe")
    now = datetime.now(UTC)
    assert leases.create(db, ref, now, timedelta(seconds=30), lease_field="expire_at")
    assert not leases.create(db, ref, now + timedelta(seconds=29), timedelta(seconds=30), lease_field="expire_at")
    assert ref.get().exists  # a live lease is never cleared
    # Once it has run out, one try clears it and the next takes it.
    assert not leases.create(db, ref, now + timedelta(seconds=31), timedelta(seconds=30), lease_field="expire_at")
    assert leases.create(db, ref, now + timedelta(seconds=31), timedelta(seconds=30), lease_field="expire_at")
    leases.drop(ref)
    assert not ref.get().exists

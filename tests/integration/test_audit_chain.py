"""The hash-chained audit trail on the Firestore emulator: tampering anywhere is found."""

from __future__ import annotations

import threading

import pytest

from orderpally import audit, clients

pytestmark = pytest.mark.usefixtures("emulators")
ACTOR = audit.Actor(kind="customer", id="acct")


def fill(n: int, account: str = "acct") -> None:
    for i in range(n):
        audit.record(account, audit.AuditEvent("sign_in.succeeded", ACTOR, "203.0.113.9", None, {"i": i}))


def test_an_untouched_chain_verifies():
    fill(5)
    verdict = audit.verify("acct")
    assert verdict.intact
    assert verdict.entries == 5
    assert [e["seq"] for e in audit.page("acct", 10)] == [5, 4, 3, 2, 1]
    assert [e["seq"] for e in audit.page("acct", 2, before_seq=3)] == [2, 1]


def test_an_edited_entry_is_found():
    fill(5)
    clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(3)}").update(
        {"client_address": "198.51.100.1"}
    )
    verdict = audit.verify("acct")
    assert not verdict.intact
    assert verdict.first_broken_seq == 3


def test_a_rehashed_edit_still_breaks_the_next_link():
    fill(5)
    ref = clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(2)}")
    body = ref.get().to_dict()
    body["action"] = "sign_out"
    body["hash"] = audit.entry_hash(body)  # a careful forger recomputes the hash
    ref.set(body)
    verdict = audit.verify("acct")
    assert verdict.first_broken_seq == 3


@pytest.mark.parametrize(("removed", "expected"), [(2, 2), (5, 5)])
def test_a_removed_entry_is_found(removed, expected):
    fill(5)
    clients.firestore_client().document(f"accounts/acct/audit_trail/{audit.entry_id(removed)}").delete()
    verdict = audit.verify("acct")
    assert not verdict.intact
    assert verdict.first_broken_seq == expected


def test_concurrent_writers_extend_one_chain():
    threads = [threading.Thread(target=fill, args=(3,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verdict = audit.verify("acct")
    assert verdict.intact
    assert verdict.entries == 12


def test_the_scheduled_check_names_broken_chains():
    from datetime import UTC, datetime

    fill(3, "good")
    fill(3, "bad")
    clients.firestore_client().document(f"accounts/bad/audit_trail/{audit.entry_id(1)}").update({"reason": "edited"})
    result = audit.verify_recent(datetime.now(UTC))
    assert result == {"checked": 2, "broken": ["bad"]}

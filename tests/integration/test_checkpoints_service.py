"""Signed checkpoints over the audit chains' heads, against the Firestore emulator: what a run
appends, that each checkpoint extends the one before, that a chain deleted behind the system's
back leaves a tombstone and an alert, and that a customer's proof checks out."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import orderpally_verify as verifier
import pytest

from orderpally import audit, clients, events, web
from orderpally.checkpoints import rules, service, signing, store

pytestmark = pytest.mark.usefixtures("emulators")

SIGNER = signing.LocalSigner.generate()


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


def ports(clock: Clock, *, deleted: frozenset[str] = frozenset(), deleted_since: bool = False) -> service.Ports:
    return service.Ports(
        db=clients.firestore_client(),
        signer=SIGNER,
        origin="api.orderpally.example/audit",
        now=clock,
        deletion_started=lambda chain_id: chain_id in deleted,
        deleted_since=lambda moment: deleted_since,
    )


def alerts(caplog) -> list[str]:
    return [getattr(r, "fields", {}).get("alert") for r in caplog.records if r.levelno >= logging.ERROR]


def record(account_id: str, action: str) -> None:
    audit.record(
        clients.firestore_client(),
        account_id,
        audit.AuditEvent(action, audit.Actor("customer", account_id), "203.0.113.8"),
    )


def roots_match_signature(checkpoint: dict) -> bool:
    body = checkpoint["body"].encode()
    return signing.verify_signature(SIGNER.public_key_pem(), body, base64.b64decode(checkpoint["signature"]))


def test_the_first_run_commits_every_chain_head_and_signs_the_root():
    for account in ("acct-a", "acct-b", "acct-c"):
        record(account, "sign_in.succeeded")
    result = service.publish(ports(Clock()))
    assert result == {"tree_size": 3, "appended": 3, "gone": 0}
    latest = service.latest_checkpoint(clients.firestore_client())
    assert roots_match_signature(latest)
    assert latest["public_key_pem"] == SIGNER.public_key_pem().decode()
    heads = {chain_id: (seq, head_hash) for chain_id, seq, head_hash in audit.heads(clients.firestore_client())}
    leaves = [rules.leaf_hash(rules.head_leaf(c, *heads[c], False)) for c in ("acct-a", "acct-b", "acct-c")]
    assert base64.b64decode(latest["root_hash"]) == rules.root(leaves)


def test_a_run_appends_only_the_heads_that_moved_and_extends_the_last_checkpoint():
    clock = Clock()
    for account in ("acct-a", "acct-b"):
        record(account, "sign_in.succeeded")
    service.publish(ports(clock))
    clock.at += timedelta(days=1)
    assert service.publish(ports(clock)) == {"tree_size": 2, "appended": 0, "gone": 0}  # nothing moved
    record("acct-b", "sign_out")
    clock.at += timedelta(days=1)
    assert service.publish(ports(clock))["tree_size"] == 3
    db = clients.firestore_client()
    proof = service.consistency(db, 2, 3)
    first, second = proof["first"], proof["second"]
    assert verifier.verify_consistency(
        2,
        3,
        base64.b64decode(first["root_hash"]),
        base64.b64decode(second["root_hash"]),
        [base64.b64decode(p) for p in proof["consistency"]["path"]],
    )
    assert [leaf.chain_id for leaf in store.leaves(db, 3)] == ["acct-a", "acct-b", "acct-b"]


def test_no_checkpoint_is_signed_before_it_is_due_unless_a_deletion_was_certified():
    clock = Clock()
    record("acct-a", "sign_in.succeeded")
    service.publish(ports(clock))
    record("acct-a", "sign_out")
    clock.at += timedelta(hours=1)
    assert service.publish(ports(clock))["due"] is False
    assert service.publish(ports(clock, deleted_since=True))["tree_size"] == 2


def test_a_chain_deleted_whole_without_a_deletion_leaves_a_tombstone_and_an_alert(caplog):
    clock = Clock()
    for account in ("acct-a", "acct-gone"):
        record(account, "sign_in.succeeded")
    service.publish(ports(clock))
    db = clients.firestore_client()
    # The attacker's edit: the chain's entries and its head, together.
    chain = audit.account_chain(clients.firestore_client(), "acct-gone")
    for ref in chain.entries.list_documents():
        ref.delete()
    chain.head.delete()
    clock.at += timedelta(days=1)
    with caplog.at_level(logging.ERROR, logger="orderpally.checkpoints"):
        assert service.publish(ports(clock))["gone"] == 1
    assert alerts(caplog) == [service.ALERT_CHAIN_VANISHED]
    tombstone = store.leaves(db, 3)[-1]
    assert (tombstone.chain_id, tombstone.deleted) == ("acct-gone", True)
    # The earlier head stays committed: the new checkpoint still extends the old one.
    assert service.consistency(db, 2, 3)["consistency"]["first_size"] == 2


def test_a_deleted_account_s_chain_leaves_a_tombstone_without_an_alert(caplog):
    clock = Clock()
    record("acct-deleted", "sign_in.succeeded")
    service.publish(ports(clock))
    audit.account_chain(clients.firestore_client(), "acct-deleted").head.delete()
    clock.at += timedelta(days=1)
    with caplog.at_level(logging.ERROR, logger="orderpally.checkpoints"):
        assert service.publish(ports(clock, deleted=frozenset({"acct-deleted"})))["gone"] == 1
    assert alerts(caplog) == []


def test_one_run_at_a_time():
    clock = Clock()
    record("acct-a", "sign_in.succeeded")
    assert store.claim_run(clients.firestore_client(), clock(), timedelta(minutes=5))
    with pytest.raises(events.RetryableError):
        service.publish(ports(clock))


def test_a_customer_s_proof_holds_their_trail_to_its_checkpointed_head_and_its_inclusion():
    clock = Clock()
    for action in ("sign_in.succeeded", "api_key.created", "sign_out"):
        record("acct-a", action)
    record("acct-b", "sign_in.succeeded")
    service.publish(ports(clock))
    record("acct-a", "sign_in.succeeded")  # after the checkpoint: not in this proof
    db = clients.firestore_client()
    chain = audit.account_chain(clients.firestore_client(), "acct-a")
    bundle = service.trail_proof(db, "acct-a", lambda seq: audit.chain_entries(chain, seq), lambda entry: entry)
    assert [entry["seq"] for entry in bundle["entries"]] == [1, 2, 3]
    assert all(audit.entry_hash(entry) == entry["hash"] for entry in bundle["entries"])
    head, inclusion = bundle["head"], bundle["inclusion"]
    assert head == {"seq": 3, "hash": bundle["entries"][-1]["hash"], "deleted": False}
    assert verifier.verify_inclusion(
        rules.leaf_hash(rules.head_leaf("acct-a", head["seq"], head["hash"], False)),
        inclusion["leaf_index"],
        inclusion["tree_size"],
        [base64.b64decode(p) for p in inclusion["path"]],
        base64.b64decode(bundle["checkpoint"]["root_hash"]),
    )


def test_a_proof_before_the_first_checkpoint_of_the_chain_is_refused_clearly():
    clock = Clock()
    record("acct-a", "sign_in.succeeded")
    service.publish(ports(clock))
    record("acct-new", "sign_in.succeeded")
    chain = audit.account_chain(clients.firestore_client(), "acct-new")
    with pytest.raises(web.Problem) as refused:
        service.trail_proof(
            clients.firestore_client(),
            "acct-new",
            lambda seq: audit.chain_entries(chain, seq),
            lambda entry: entry,
        )
    assert getattr(refused.value, "status", None) == 409

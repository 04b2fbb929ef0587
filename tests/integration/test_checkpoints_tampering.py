"""As an outsider: keep a checkpoint and a bundle, tamper with the trail in the emulator in each
way issue #18 lists, and run the offline verifier (tools/orderpally_verify) on what the service
serves next. Each tampering must fail the check that names it; untouched, everything passes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orderpally_verify as verifier
import pytest

from orderpally import audit, clients
from orderpally.checkpoints import service, signing, store

pytestmark = pytest.mark.usefixtures("emulators")

SIGNER = signing.LocalSigner.generate()
OTHER_KEY = signing.LocalSigner.generate()


class Log:
    """The service as the schedule and the customer's downloads use it, one day per run."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def publish(self) -> dict:
        self.at += timedelta(days=1)
        ports = service.Ports(
            db=clients.firestore_client(),
            signer=SIGNER,
            origin="api.orderpally.example/audit",
            now=lambda: self.at,
            deletion_started=lambda chain_id: False,
            deleted_since=lambda moment: False,
        )
        return service.publish(ports)

    def bundle(self, account_id: str, since: int | None = None) -> dict:
        chain = audit.account_chain(clients.firestore_client(), account_id)
        return service.trail_proof(
            clients.firestore_client(),
            account_id,
            lambda seq: audit.chain_entries(chain, seq),
            lambda entry: entry,
            since=since,
        )


def record(account_id: str, action: str) -> None:
    audit.record(
        clients.firestore_client(),
        account_id,
        audit.AuditEvent(action, audit.Actor("customer", account_id), "203.0.113.8"),
    )


def failed(checks: list) -> set[str]:
    return {check.name for check in checks if not check.ok}


@pytest.fixture
def log() -> Log:
    for action in ("sign_in.succeeded", "api_key.created", "sign_out"):
        record("acct-a", action)
    record("acct-b", "sign_in.succeeded")
    log = Log()
    log.publish()
    return log


def test_an_untouched_trail_passes_every_check_also_against_a_kept_bundle(log):
    kept = log.bundle("acct-a")
    assert failed(verifier.verify_trail(kept)) == set()
    record("acct-a", "sign_in.succeeded")
    log.publish()
    later = log.bundle("acct-a", since=kept["checkpoint"]["tree_size"])
    checks = verifier.verify_trail(later, SIGNER.public_key_pem(), saved=kept)
    assert failed(checks) == set()
    assert {check.name for check in checks} >= {"chain", "inclusion", "signature", "consistency"}


def test_an_edited_entry_is_caught(log):
    entries = audit.account_chain(clients.firestore_client(), "acct-a").entries.order_by("seq").get()
    entries[1].reference.update({"action": "sign_in.failed"})
    assert "chain" in failed(verifier.verify_trail(log.bundle("acct-a"), SIGNER.public_key_pem()))


def test_a_deleted_entry_is_caught(log):
    entries = audit.account_chain(clients.firestore_client(), "acct-a").entries.order_by("seq").get()
    entries[1].reference.delete()
    assert "chain" in failed(verifier.verify_trail(log.bundle("acct-a"), SIGNER.public_key_pem()))


def test_entries_cut_from_the_end_with_the_head_rewound_are_caught_by_a_kept_bundle(log):
    kept = log.bundle("acct-a")
    chain = audit.account_chain(clients.firestore_client(), "acct-a")
    entries = chain.entries.order_by("seq").get()
    entries[-1].reference.delete()
    chain.head.update({"seq": 2, "hash": entries[1].get("hash")})  # as if entry 3 never was
    log.publish()
    later = log.bundle("acct-a", since=kept["checkpoint"]["tree_size"])
    assert failed(verifier.verify_trail(later, SIGNER.public_key_pem())) == set()  # alone, it looks fine
    assert "earlier head" in failed(verifier.verify_trail(later, SIGNER.public_key_pem(), saved=kept))


def test_a_whole_deleted_chain_is_caught(log):
    kept = log.bundle("acct-a")
    chain = audit.account_chain(clients.firestore_client(), "acct-a")
    for ref in chain.entries.list_documents():
        ref.delete()
    chain.head.delete()
    assert log.publish()["gone"] == 1
    later = log.bundle("acct-a", since=kept["checkpoint"]["tree_size"])
    assert later["head"]["deleted"] is True
    assert "chain" in failed(verifier.verify_trail(later, SIGNER.public_key_pem(), saved=kept))


def test_a_forked_checkpoint_is_caught(log):
    kept = log.bundle("acct-a")
    db = clients.firestore_client()
    # The operator rewrites history: acct-b's committed head becomes another, and the log is re-signed.
    chunk = db.collection(store.LOG).document("00000000")
    leaves = chunk.get().get("leaves")
    leaves[1]["h"] = "f" * 64
    chunk.set({"leaves": leaves})
    record("acct-a", "sign_out")
    log.publish()
    later = log.bundle("acct-a", since=kept["checkpoint"]["tree_size"])
    assert "consistency" in failed(verifier.verify_trail(later, SIGNER.public_key_pem(), saved=kept))


def test_a_wrong_signature_is_caught(log):
    bundle = log.bundle("acct-a")
    assert "signature" in failed(verifier.verify_trail(bundle, OTHER_KEY.public_key_pem()))
    forged = OTHER_KEY.sign(bundle["checkpoint"]["body"].encode())
    bundle["checkpoint"]["signature"] = base64.b64encode(forged).decode()
    assert "signature" in failed(verifier.verify_trail(bundle, SIGNER.public_key_pem()))

"""The offline verifier (tools/orderpally_verify) against bundles built from checkpoints.rules."""

from __future__ import annotations

import ast
import base64
import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orderpally_verify as verifier
import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds

from orderpally import audit
from orderpally.access.http.account import _iso
from orderpally.checkpoints import rules, signing

TOOLS = Path(__file__).resolve().parents[2] / "tools"

ORIGIN = "orderpally.example/audit-checkpoints"
T0 = datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)


# --- a log as the scheduled checkpoint function would keep it ---------------------------------


def link(entries: list[dict[str, Any]], count: int, reason: str | None = None) -> list[dict[str, Any]]:
    """`entries` and `count` more, hashed and linked as audit._link_batch links them (stored form)."""
    linked = list(entries)
    for _ in range(count):
        seq = len(linked) + 1
        content = {
            "action": "staff.read" if seq % 2 else "sign_in.succeeded",
            "actor": {"kind": "customer", "id": "u1", "role": None},
            "client_address": "203.0.113.7",
            "reason": reason,
            "details": {"what": "account", "n": seq},
            "at": T0 + timedelta(minutes=seq),
        }
        body = {**content, "seq": seq, "prev_hash": linked[-1]["hash"] if linked else audit.GENESIS}
        body["hash"] = audit.entry_hash(body)
        linked.append({**body, "recorded_at": T0 + timedelta(minutes=seq, seconds=1)})
    return linked


def as_the_api_returns(stored: dict[str, Any]) -> dict[str, Any]:
    """An entry as the trail API sends it: audit._public's id, no receipt time, times by _iso."""
    return _iso({"id": audit.entry_id(stored["seq"]), **{k: v for k, v in stored.items() if k != "recorded_at"}})


def head_of(chain_id: str, entries: list[dict[str, Any]], deleted: bool = False) -> rules.ChainHead:
    last = entries[-1] if entries else {"seq": 0, "hash": audit.GENESIS}
    return rules.ChainHead(chain_id, last["seq"], last["hash"], deleted)


class Log:
    """The append-only checkpoint log, as checkpoints.service keeps it: each checkpoint appends
    the heads that moved since the one before."""

    def __init__(self, signer: signing.Signer) -> None:
        self.signer = signer
        self.leaves: list[bytes] = []
        self.logged: dict[str, rules.ChainHead] = {}
        self.index: dict[str, int] = {}  # each chain's newest leaf
        self.checkpoints: list[dict[str, Any]] = []

    def publish(self, heads: list[rules.ChainHead], minute: int) -> dict[str, Any]:
        moved = sorted((h for h in heads if self.logged.get(h.chain_id) != h), key=lambda h: h.chain_id)
        start = len(self.leaves)
        self.leaves += [rules.leaf_hash(leaf) for leaf in rules.checkpoint_leaves(moved)]
        self.index |= {h.chain_id: start + i for i, h in enumerate(moved)}
        self.logged |= {h.chain_id: h for h in moved}
        issued_at = rules.rfc3339_utc(T0 + timedelta(minutes=minute))
        body = rules.checkpoint_body(ORIGIN, len(self.leaves), rules.root(self.leaves), issued_at)
        checkpoint = rules.checkpoint_json(body, self.signer.key_id, self.signer.sign(body.encode()))
        self.checkpoints.append(checkpoint)
        return checkpoint

    def bundle(
        self, chain_id: str, entries: list[dict[str, Any]], since: dict[str, Any] | None = None, leaf: int | None = None
    ) -> dict[str, Any]:
        head, size = head_of(chain_id, entries), len(self.leaves)
        index = self.index[chain_id] if leaf is None else leaf
        bundle = {
            "account_chain": chain_id,
            "entries": [as_the_api_returns(e) for e in reversed(entries)],  # the API's order: newest first
            "head": {"seq": head.seq, "hash": head.head_hash, "deleted": head.deleted},
            "checkpoint": self.checkpoints[-1],
            "inclusion": rules.inclusion_json(index, size, rules.inclusion_proof(self.leaves, index)),
            "public_key_pem": self.signer.public_key_pem().decode(),
        }
        if since is not None:
            first = since["tree_size"]
            bundle["consistency"] = rules.consistency_json(first, size, rules.consistency_proof(self.leaves, first))
        return bundle


@pytest.fixture(scope="module")
def signer() -> signing.LocalSigner:
    return signing.LocalSigner.generate()


class World:
    """Three accounts' chains, checkpoint 1 (size 3), two more entries on acc-a, checkpoint 2 (size 4)."""

    def __init__(self, signer: signing.LocalSigner) -> None:
        self.signer = signer
        self.chains = {"acc-a": link([], 5), "acc-b": link([], 3, reason="客服查詢：帳號異常"), "acc-c": link([], 4)}
        self.log = Log(signer)
        self.first = self.log.publish(self.heads(), minute=60)
        self.saved_bundle = self.log.bundle("acc-a", self.chains["acc-a"])
        self.chains["acc-a"] = link(self.chains["acc-a"], 2)
        self.second = self.log.publish(self.heads(), minute=120)

    def proof_between(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        first, second = old["tree_size"], new["tree_size"]
        return rules.consistency_json(first, second, rules.consistency_proof(self.log.leaves[:second], first))

    def heads(self, *without: str) -> list[rules.ChainHead]:
        return [head_of(chain_id, entries) for chain_id, entries in self.chains.items() if chain_id not in without]

    def bundle(self, chain_id: str = "acc-a") -> dict[str, Any]:
        return self.log.bundle(chain_id, self.chains[chain_id], since=self.first)


@pytest.fixture
def world(signer: signing.LocalSigner) -> World:
    return World(signer)


def results(checks: list[verifier.Check]) -> dict[str, bool]:
    return {check.name: check.ok for check in checks}


def failed(checks: list[verifier.Check]) -> set[str]:
    return {check.name for check in checks if not check.ok}


# --- the entry hash: one definition, in two places ------------------------------------------

BODIES = [
    {"action": "sign_in.succeeded", "actor": {"kind": "customer", "id": "u1", "role": None}, "at": T0},
    {"action": "x", "at": T0.replace(microsecond=0), "reason": None, "client_address": None},
    {"action": "staff.read", "reason": "客服查詢：帳號異常（第二次）", "details": {"what": "帳號", "é": "ü"}},
    {"details": {"a": {"b": [1, 2, {"c": "é"}]}, "n": None, "f": 1.5, "t": True, "big": 2**53 + 1}},
    {"action": "x", "at": datetime(2026, 3, 1, 17, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))},
    {"action": "x", "at": DatetimeWithNanoseconds(2026, 3, 1, 9, 0, 0, 999999, tzinfo=UTC)},
    {"action": "x", "at": DatetimeWithNanoseconds(2026, 3, 1, 9, 0, 0, tzinfo=UTC)},
]


@pytest.mark.parametrize("content", BODIES)
def test_the_verifiers_entry_hash_is_audits(content):
    stored = {**content, "seq": 7, "prev_hash": "ab" * 32}
    stored["hash"] = audit.entry_hash(stored)
    stored["recorded_at"] = T0
    sent = json.loads(json.dumps(as_the_api_returns(stored), ensure_ascii=False, default=str))  # over the wire
    assert verifier.entry_hash(sent) == stored["hash"] == verifier.entry_hash(stored)
    # Times left to web.json_response's default=str ("2026-03-01 09:00:00+00:00") hash the same.
    raw = json.loads(json.dumps({k: v for k, v in stored.items() if k != "recorded_at"}, default=str))
    assert verifier.entry_hash(raw) == stored["hash"]
    assert verifier.GENESIS == audit.GENESIS


def test_the_verifier_imports_only_the_standard_library_and_cryptography():
    allowed = set(sys.stdlib_module_names) | {"cryptography", "orderpally_verify", "__future__"}
    for path in (TOOLS / "orderpally_verify").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert {name.split(".")[0] for name in names} <= allowed, path.name


def test_the_verifiers_leaf_and_proof_checks_are_the_rules():
    assert verifier.head_leaf("帳號", 3, "c" * 64, True) == rules.head_leaf("帳號", 3, "c" * 64, True)
    leaves = [rules.leaf_hash(bytes([i])) for i in range(13)]
    root = rules.root(leaves)
    for i in range(13):
        assert verifier.verify_inclusion(leaves[i], i, 13, rules.inclusion_proof(leaves, i), root)
    for m in range(14):
        proof = rules.consistency_proof(leaves, m)
        assert verifier.verify_consistency(m, 13, rules.root(leaves[:m]), root, proof)


# --- an intact trail --------------------------------------------------------------------------


def test_an_intact_trail_passes_every_check(world):
    checks = verifier.verify_trail(world.bundle(), saved=world.first)
    assert results(checks) == {
        "chain": True,
        "inclusion": True,
        "signature": True,
        "saved signature": True,
        "consistency": True,
    }
    assert checks[0].line().startswith("ok chain: 7 entries")


def test_an_intact_trail_passes_against_a_saved_bundle_and_the_published_key(world, signer):
    checks = verifier.verify_trail(world.bundle(), signer.public_key_pem(), saved=world.saved_bundle)
    assert failed(checks) == set()
    assert "earlier head" in results(checks)


def test_a_bundle_of_the_checkpoint_itself_needs_no_consistency_proof(world):
    bundle = world.log.bundle("acc-b", world.chains["acc-b"])
    assert failed(verifier.verify_trail(bundle, saved=world.second)) == set()
    assert failed(verifier.verify_trail(bundle)) == set()


def test_an_empty_chain_verifies_as_seq_zero(signer):
    log = Log(signer)
    log.publish([head_of("acc-new", []), head_of("acc-old", link([], 2))], minute=1)
    assert failed(verifier.verify_trail(log.bundle("acc-new", []))) == set()


def test_a_deleted_accounts_tombstone_verifies(signer):
    entries = link([], 3)
    log = Log(signer)
    log.publish([head_of("acc-gone", entries, deleted=True), head_of("acc-b", link([], 1))], minute=1)
    bundle = log.bundle("acc-gone", entries)
    bundle["head"]["deleted"] = True
    assert failed(verifier.verify_trail(bundle)) == set()
    bundle["head"]["deleted"] = False  # passing a tombstone off as a live chain
    assert failed(verifier.verify_trail(bundle)) == {"inclusion"}


# --- what the verifier catches ----------------------------------------------------------------


def redact(entry: dict[str, Any]) -> dict[str, Any]:
    """As checkpoints.service.redacted shows a staff member's entry to the customer."""
    shown = {"action": entry["action"], "actor": {"kind": "staff", "role": "support"}, "at": entry["at"]}
    return {"seq": entry["seq"], "prev_hash": entry["prev_hash"], "hash": entry["hash"], "redacted": True, **shown}


def test_a_redacted_entry_is_checked_for_its_links(world):
    bundle = world.bundle()
    bundle["entries"][4] = redact(bundle["entries"][4])
    checks = verifier.verify_trail(bundle, saved=world.first)
    assert failed(checks) == set()
    assert "1 redacted" in checks[0].line()
    bundle["entries"][4]["hash"] = "f" * 64  # another entry in its place
    assert failed(verifier.verify_trail(bundle)) == {"chain"}


def test_a_redacted_newest_entry_still_ends_at_the_checkpointed_head(world):
    bundle = world.bundle()
    bundle["entries"][0] = {**redact(bundle["entries"][0]), "hash": "e" * 64}
    bundle["head"]["hash"] = "e" * 64
    assert failed(verifier.verify_trail(bundle)) == {"inclusion"}


def test_an_edited_entry_is_caught(world):
    bundle = world.bundle()
    bundle["entries"][3]["reason"] = "nothing to see"
    checks = verifier.verify_trail(bundle, saved=world.first)
    assert failed(checks) == {"chain"}
    assert "entry 4's content was changed" in checks[0].line()


def test_an_edited_time_is_caught(world):
    bundle = world.bundle()
    bundle["entries"][0]["at"] = (T0 + timedelta(hours=5)).isoformat()
    assert failed(verifier.verify_trail(bundle)) == {"chain"}


def test_a_rewritten_history_with_recomputed_hashes_is_caught_by_the_checkpoint(world):
    stored = copy.deepcopy(world.chains["acc-a"])
    stored[2]["reason"] = "rewritten"  # and every hash after it recomputed
    for i, entry in enumerate(stored):
        entry["prev_hash"] = stored[i - 1]["hash"] if i else audit.GENESIS
        entry["hash"] = audit.entry_hash(entry)
    bundle = world.log.bundle("acc-a", stored, since=world.first)
    assert failed(verifier.verify_trail(bundle, saved=world.first)) == {"inclusion"}


@pytest.mark.parametrize("position", [1, 3])
def test_a_deleted_middle_entry_is_caught(world, position):
    bundle = world.bundle()
    del bundle["entries"][position]
    assert "chain" in failed(verifier.verify_trail(bundle, saved=world.first))


def test_a_deleted_last_entry_is_caught(world):
    bundle = world.bundle()
    del bundle["entries"][0]  # newest first
    checks = verifier.verify_trail(bundle, saved=world.first)
    assert failed(checks) == {"chain"}
    assert "not the last entry" in checks[0].line()


def test_a_deleted_last_entry_with_its_head_rewritten_is_caught_by_inclusion(world):
    truncated = world.chains["acc-a"][:-1]
    bundle = world.log.bundle("acc-a", truncated, since=world.first)  # the checkpoint still holds seq 7
    assert failed(verifier.verify_trail(bundle, saved=world.first)) == {"inclusion"}


def test_a_truncated_chain_republished_in_a_new_checkpoint_is_caught_by_a_saved_bundle(world):
    saved = world.bundle()  # the reader kept the bundle with seq 7
    world.chains["acc-a"] = world.chains["acc-a"][:-1]
    world.log.publish(world.heads(), minute=180)
    bundle = world.log.bundle("acc-a", world.chains["acc-a"], since=world.second)
    assert failed(verifier.verify_trail(bundle)) == set()  # on its own it looks whole
    checks = verifier.verify_trail(bundle, saved=saved)
    assert failed(checks) == {"earlier head"}


def test_a_whole_deleted_chain_is_caught(world):
    entries = world.chains.pop("acc-b")
    world.log.publish(world.heads(), minute=180)  # checkpoint 3 leaves acc-b out
    # Served as a chain with no entries: no such head is in the checkpoint.
    empty = world.log.bundle("acc-a", [], since=world.second)
    empty["account_chain"] = "acc-b"
    assert "inclusion" in failed(verifier.verify_trail(empty, saved=world.second))
    # Served as another chain's: its head is no leaf of the log.
    other = world.log.bundle("acc-b", entries, since=world.second, leaf=world.log.index["acc-c"])
    assert "inclusion" in failed(verifier.verify_trail(other, saved=world.second))


def test_a_log_rebuilt_without_a_chain_is_caught_by_consistency(world, signer):
    del world.chains["acc-b"]
    rebuilt = Log(signer)  # history rewritten: every batch without acc-b
    rebuilt.publish([head_of(c, link([], 5 if c == "acc-a" else 4)) for c in ("acc-a", "acc-c")], minute=60)
    rebuilt.publish(world.heads(), minute=120)
    rebuilt.publish(world.heads(), minute=180)
    bundle = rebuilt.bundle("acc-a", world.chains["acc-a"], since=world.first)
    assert failed(verifier.verify_trail(bundle, saved=world.first)) == {"consistency"}


def test_a_forked_checkpoint_of_the_same_size_is_caught(world, signer):
    fork = Log(signer)
    fork.publish(world.heads(), minute=60)
    fork.leaves[0] = rules.leaf_hash(b"another head")
    fork.checkpoints.clear()
    body = rules.checkpoint_body(ORIGIN, len(fork.leaves), rules.root(fork.leaves), world.first["issued_at"])
    forked = rules.checkpoint_json(body, signer.key_id, signer.sign(body.encode()))
    checks = verifier.verify_checkpoints(world.first, forked, rules.consistency_json(3, 3, []), signer.public_key_pem())
    assert failed(checks) == {"consistency"}
    assert "forked" in checks[-1].line()


def test_a_new_checkpoint_not_extending_the_saved_one_is_caught(world, signer):
    other = Log(signer)
    other.publish([head_of("acc-z", link([], 1))], minute=60)
    other.publish(world.heads(), minute=120)
    bundle = other.bundle("acc-a", world.chains["acc-a"], since=world.first)  # a proof from size 3 of the other tree
    assert "consistency" in failed(verifier.verify_trail(bundle, saved=world.first))
    bundle = world.bundle()
    del bundle["consistency"]  # and with no proof at all
    assert failed(verifier.verify_trail(bundle, saved=world.first)) == {"consistency"}


def test_a_tampered_proof_is_caught(world):
    bundle = world.bundle()
    path = bundle["inclusion"]["path"]
    path[0] = path[0][:-4] + ("AAA=" if not path[0].endswith("AAA=") else "AQA=")
    assert failed(verifier.verify_trail(bundle)) == {"inclusion"}
    bundle = world.bundle()
    bundle["inclusion"]["leaf_index"] += 1
    assert failed(verifier.verify_trail(bundle)) == {"inclusion"}
    bundle = world.bundle()
    bundle["consistency"]["path"].reverse()
    assert failed(verifier.verify_trail(bundle, saved=world.first)) == {"consistency"}


def test_a_signature_by_another_key_is_caught(world):
    other = signing.LocalSigner.generate()
    checks = verifier.verify_trail(world.bundle(), other.public_key_pem(), saved=world.first)
    assert failed(checks) == {"signature", "saved signature"}


def test_a_bundle_signed_by_its_own_substituted_key_is_caught_by_the_published_key(world, signer):
    impostor = signing.LocalSigner.generate()
    log = Log(impostor)
    log.publish(world.heads(), minute=120)
    bundle = log.bundle("acc-a", world.chains["acc-a"])
    assert failed(verifier.verify_trail(bundle)) == set()  # the bundle vouches for itself...
    assert failed(verifier.verify_trail(bundle, signer.public_key_pem())) == {"signature"}  # ...not for the key


def test_a_flipped_signature_byte_is_caught(world):
    bundle = world.bundle()
    signature = bytearray(verifier._b64(bundle["checkpoint"]["signature"]))
    signature[-1] ^= 1
    bundle["checkpoint"]["signature"] = base64.b64encode(bytes(signature)).decode()
    assert failed(verifier.verify_trail(bundle)) == {"signature"}


def test_fields_that_disagree_with_the_signed_body_are_caught(world):
    bundle = world.bundle()
    bundle["checkpoint"]["issued_at"] = "2030-01-01T00:00:00Z"
    assert failed(verifier.verify_trail(bundle)) == {"signature"}


def test_two_checkpoints_and_their_proof(world, signer):
    proof = world.proof_between(world.first, world.second)
    key = signer.public_key_pem()
    assert failed(verifier.verify_checkpoints(world.first, world.second, proof, key)) == set()
    assert failed(verifier.verify_checkpoints(world.second, world.first, proof, key)) == {"consistency"}


def test_unreadable_input_is_not_a_verdict(world):
    with pytest.raises(verifier.Unreadable):
        verifier.verify_trail({"entries": []})
    bundle = world.bundle()
    bundle["head"]["seq"] = "7"
    with pytest.raises(verifier.Unreadable):
        verifier.verify_trail(bundle)
    with pytest.raises(verifier.Unreadable):
        verifier.verify_trail(world.bundle(), b"not a key")


# --- as an outsider runs it -------------------------------------------------------------------


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TOOLS)}  # tools only: the verifier cannot reach orderpally
    return subprocess.run(
        [sys.executable, "-m", "orderpally_verify", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line_exit_codes(world, signer, tmp_path):
    def write(name: str, value: Any) -> str:
        (tmp_path / name).write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        return name

    (tmp_path / "key.pem").write_bytes(signer.public_key_pem())
    good = write("bundle.json", world.bundle())
    saved = write("saved.json", world.first)
    edited_bundle = world.bundle()
    edited_bundle["entries"][1]["details"]["what"] = "changed"
    edited = write("edited.json", edited_bundle)
    proof = write("proof.json", world.proof_between(world.first, world.second))
    new = write("new.json", world.second)
    (tmp_path / "broken.json").write_text("{not json")

    passed = run(tmp_path, "trail", good, "--checkpoint", saved, "--public-key", "key.pem")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.splitlines()[0].startswith("ok chain")
    assert all(line.startswith("ok ") for line in passed.stdout.splitlines())

    caught = run(tmp_path, "trail", edited, "--checkpoint", saved)
    assert caught.returncode == 1
    assert "FAILED chain: entry 6's content was changed" in caught.stdout

    assert run(tmp_path, "trail", "broken.json").returncode == 2
    assert run(tmp_path, "trail", "missing.json").returncode == 2
    assert run(tmp_path, "consistency", saved, new, proof, "--public-key", "key.pem").returncode == 0
    assert run(tmp_path, "consistency", new, saved, proof, "--public-key", "key.pem").returncode == 1

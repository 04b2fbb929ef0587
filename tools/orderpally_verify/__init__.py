"""Verifies an OrderPally audit trail offline, trusting nothing OrderPally runs.

    python -m orderpally_verify trail BUNDLE.json [--checkpoint SAVED.json] [--public-key KEY.pem]
                                                  [--consistency PROOF.json]
    python -m orderpally_verify consistency OLD.json NEW.json PROOF.json --public-key KEY.pem

Needs Python 3.11+ and `cryptography`, nothing else. Each check prints "ok ..." or
"FAILED ..."; the exit status is 0 when all pass, 1 when any fails, 2 when an input
cannot be read. Keep the checkpoints you verify (or whole bundles): the next run with
--checkpoint shows the log only grew since, and an earlier bundle also pins your chain's
head then, so entries removed from its end cannot pass unnoticed.

Formats (JSON, UTF-8; binary values base64, standard alphabet, padded):

checkpoint
    {"origin": str, "tree_size": int, "root_hash": b64 (32 bytes), "issued_at": RFC 3339 UTC,
     "key_id": str, "signature": b64 DER ECDSA P-256/SHA-256 over the UTF-8 of "body",
     "body": "<origin>\\n<tree_size>\\n<root_hash>\\nissued_at <issued_at>\\n"}
    (a C2SP checkpoint note body; the other fields must say what it says)

proof (consistency)
    {"first_size": int, "second_size": int, "path": [b64, ...]}            RFC 9162 §2.1.4

trail bundle
    {"account_chain": chain id,
     "entries": [entry, ...],      the chain's whole trail as the trail API returns it, any order
     "head": {"seq": int, "hash": hex, "deleted": bool},
     "checkpoint": checkpoint,
     "inclusion": {"leaf_index": int, "tree_size": int, "path": [b64, ...]},   RFC 9162 §2.1.3
     "public_key_pem": PEM,
     "consistency": proof from an earlier checkpoint's size (optional)}

An entry has "seq" (1, 2, ...), "prev_hash" (the previous entry's "hash", 64 zeros for
the first), "hash" and the hashed fields; "id" (the API's document id, seq in 12 digits)
and "recorded_at" are not hashed. An entry with "redacted": true (one whose every field its
reader is not shown: a staff member's id and address) is checked for its place and links
only, and counted as such. Its hash is SHA-256 over the UTF-8 JSON of the entry
without "hash", "recorded_at" and "id", keys sorted, separators (",", ":"), non-ASCII
unescaped, and "at" (the only time in an entry) as UTC ISO 8601 to the microsecond
(2025-01-31T09:30:00.000000+00:00) whatever form the API gave it.

The checkpoint's tree is RFC 9162's (leaf SHA-256(0x00 || leaf), node SHA-256(0x01 || l || r));
a chain head's leaf is the UTF-8 JSON {"chain_id","deleted","head_hash","seq"}, keys sorted,
separators (",", ":"), non-ASCII unescaped. An empty chain's head is seq 0 and 64 zeros.
The log is append-only: each checkpoint appends the heads that moved since the one before
(a deleted chain's as a tombstone, "deleted": true). This tool cannot tell whether a later
leaf of the same chain follows the one a bundle proves; keeping bundles can ("earlier head").
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUMMARY = "Verifies an OrderPally audit trail offline, trusting nothing OrderPally runs."
GENESIS = "0" * 64
EMPTY_ROOT = hashlib.sha256(b"").digest()
NOT_HASHED = ("hash", "recorded_at", "id")
HEX_HASH = re.compile(r"[0-9a-f]{64}")
RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


class Unreadable(Exception):
    """An input that is not what the formats above describe."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'} {self.name}: {self.detail}"


# --- the audit chain (as functions/orderpally/audit.py hashes it) ---------------------------


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"not canonical: {type(value).__name__}")


def entry_hash(entry: dict[str, Any]) -> str:
    content = {k: v for k, v in entry.items() if k not in NOT_HASHED}
    if isinstance(content.get("at"), str):
        at = datetime.fromisoformat(content["at"])
        if at.tzinfo is None:
            raise ValueError(f"entry time without a zone: {content['at']!r}")
        content["at"] = at
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _seq_order(entry: dict[str, Any]) -> int:
    """Where an entry sorts: by its seq; one without a whole seq first, so it fails the seq check."""
    seq = entry.get("seq")
    return seq if type(seq) is int else -1


def check_chain(entries: list[dict[str, Any]], head: dict[str, Any]) -> Check:
    """seq 1..n without gaps, each linked to the one before, each hash recomputed, the head the last."""
    previous, ordered, redacted = GENESIS, sorted(entries, key=_seq_order), 0
    for expected, entry in enumerate(ordered, start=1):
        seq = entry.get("seq")
        if seq != expected or type(seq) is not int:
            return Check("chain", False, f"entry {expected} is missing or out of place (found seq {seq!r})")
        if "id" in entry and entry["id"] != f"{seq:012d}":
            return Check("chain", False, f"entry {seq} is stored as {entry['id']!r}")
        if entry.get("prev_hash") != previous:
            return Check("chain", False, f"entry {seq}'s link to the previous entry is broken")
        if entry.get("redacted") is True:
            # Its content is not shown: its hash is taken as given, and the next entry's link covers it.
            if not isinstance(entry.get("hash"), str) or not HEX_HASH.fullmatch(entry["hash"]):
                return Check("chain", False, f"redacted entry {seq} has no hash")
            redacted += 1
        else:
            try:
                recomputed = entry_hash(entry)
            except (TypeError, ValueError) as exc:
                return Check("chain", False, f"entry {seq} cannot be hashed: {exc}")
            if recomputed != entry.get("hash"):
                return Check("chain", False, f"entry {seq}'s content was changed")
        previous = entry["hash"]
    if head["seq"] != len(ordered) or head["hash"] != previous:
        return Check("chain", False, f"the head (seq {head['seq']}) is not the last entry (seq {len(ordered)})")
    hidden = f" ({redacted} redacted: links checked, content not shown)" if redacted else ""
    return Check("chain", True, f"{len(ordered)} entries linked{hidden}, head seq {head['seq']} {previous[:16]}…")


# --- the Merkle tree (RFC 9162 §2.1) ------------------------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def head_leaf(chain_id: str, seq: int, head_hash: str, deleted: bool) -> bytes:
    content = {"chain_id": chain_id, "deleted": deleted, "head_hash": head_hash, "seq": seq}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """§2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> bool:
    """§2.1.4.2 (and: the empty tree precedes any tree; a tree is consistent only with itself at its size)."""
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not path and first_root == EMPTY_ROOT
    if first == second:
        return not path and first_root == second_root
    nodes = [first_root, *path] if first & (first - 1) == 0 else list(path)
    if not nodes:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


# --- checkpoints and proofs ---------------------------------------------------------------


def _b64(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not base64")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {value[:20]!r}") from exc
    if size is not None and len(decoded) != size:
        raise ValueError(f"{len(decoded)} bytes, not {size}")
    return decoded


def _path(value: Any) -> list[bytes]:
    if not isinstance(value, list):
        raise ValueError("a proof's path is a list")
    return [_b64(node, 32) for node in value]


def key_fingerprint(public_key_pem: bytes) -> str:
    """The first 16 hex digits of SHA-256 over the key's DER SubjectPublicKeyInfo (a checkpoint's key_id)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def signed_by(public_key_pem: bytes, message: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def check_checkpoint(checkpoint: dict[str, Any], public_key_pem: bytes, name: str = "signature") -> Check:
    """The body says what the fields say, and the key signed the body."""
    try:
        root = _b64(checkpoint["root_hash"], 32)
        signature = _b64(checkpoint["signature"])
        size, issued_at = checkpoint["tree_size"], checkpoint["issued_at"]
        if type(size) is not int or size < 0 or not isinstance(issued_at, str) or not RFC3339_UTC.fullmatch(issued_at):
            raise ValueError("tree_size or issued_at is malformed")
    except (KeyError, ValueError) as exc:
        return Check(name, False, f"the checkpoint is malformed: {exc}")
    origin = checkpoint.get("origin")
    stated = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\nissued_at {issued_at}\n"
    if not isinstance(origin, str) or not origin or "\n" in origin or checkpoint.get("body") != stated:
        return Check(name, False, "the checkpoint's signed body does not say what its fields say")
    if not signed_by(public_key_pem, stated.encode("utf-8"), signature):
        return Check(name, False, f"checkpoint {origin} #{size} is not signed by key {_fingerprint(public_key_pem)}")
    return Check(name, True, f"checkpoint {origin} #{size} of {issued_at} signed by key {_fingerprint(public_key_pem)}")


def _fingerprint(public_key_pem: bytes) -> str:
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        return key_fingerprint(public_key_pem)
    except (ValueError, UnsupportedAlgorithm):
        return "(unreadable key)"


def read_key(public_key_pem: bytes, what: str = "the public key") -> bytes:
    """`public_key_pem` if it is a P-256 public key in PEM."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Unreadable(f"{what} is not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Unreadable(f"{what} is not an ECDSA P-256 key")
    return public_key_pem


def check_inclusion(
    chain_id: str, head: dict[str, Any], inclusion: dict[str, Any], checkpoint: dict[str, Any]
) -> Check:
    """The chain's head is a leaf of the checkpoint's tree."""
    try:
        index, size = inclusion["leaf_index"], inclusion["tree_size"]
        path, root = _path(inclusion["path"]), _b64(checkpoint["root_hash"], 32)
        if type(index) is not int or type(size) is not int:
            raise ValueError("leaf_index and tree_size are integers")
    except (KeyError, ValueError) as exc:
        return Check("inclusion", False, f"the inclusion proof is malformed: {exc}")
    if size != checkpoint.get("tree_size"):
        return Check(
            "inclusion", False, f"the proof is for a tree of {size}, the checkpoint's has {checkpoint.get('tree_size')}"
        )
    leaf = head_leaf(chain_id, head["seq"], head["hash"], head["deleted"])
    if not verify_inclusion(leaf_hash(leaf), index, size, path, root):
        return Check(
            "inclusion", False, f"chain {chain_id}'s head (seq {head['seq']}) is not leaf {index} of the checkpoint"
        )
    state = "deleted chain" if head["deleted"] else "chain"
    return Check("inclusion", True, f"{state} {chain_id}'s head (seq {head['seq']}) is leaf {index} of {size}")


def check_consistency(old: dict[str, Any], new: dict[str, Any], proof: dict[str, Any] | None) -> Check:
    """The old checkpoint's tree is a prefix of the new one's: the log only grew."""
    try:
        first, second = old["tree_size"], new["tree_size"]
        old_root, new_root = _b64(old["root_hash"], 32), _b64(new["root_hash"], 32)
        path = _path(proof["path"]) if proof is not None else []
        if proof is not None and (proof.get("first_size"), proof.get("second_size")) != (first, second):
            return Check(
                "consistency",
                False,
                f"the proof is from {proof.get('first_size')} to {proof.get('second_size')}, "
                f"the checkpoints are {first} and {second}",
            )
    except (KeyError, ValueError, AttributeError) as exc:
        return Check("consistency", False, f"the consistency proof is malformed: {exc}")
    if proof is None and first != second:
        return Check("consistency", False, f"no consistency proof from tree size {first} to {second}")
    if not verify_consistency(first, second, old_root, new_root, path):
        if first == second:
            return Check("consistency", False, f"two different trees of size {first}: the log forked")
        return Check("consistency", False, f"the tree of {second} does not extend the saved tree of {first}")
    return Check("consistency", True, f"the tree of {second} extends the saved tree of {first}")


def check_earlier_head(earlier: dict[str, Any], chain_id: str, bundle: dict[str, Any]) -> Check:
    """The chain's head in an earlier bundle is still one of its entries: nothing was cut from its end."""
    name = "earlier head"
    if earlier.get("account_chain") != chain_id:
        return Check(name, False, f"the saved bundle is of chain {earlier.get('account_chain')!r}, not {chain_id!r}")
    then = earlier["head"]
    if then["seq"] == 0:
        return Check(name, True, "the saved bundle's chain had no entries")
    now = {e.get("seq"): e.get("hash") for e in bundle["entries"]}
    if then["seq"] > bundle["head"]["seq"] or now.get(then["seq"]) != then["hash"]:
        return Check(name, False, f"entry {then['seq']} of the saved bundle is gone or changed")
    return Check(name, True, f"the saved head (seq {then['seq']}) is still entry {then['seq']}")


# --- reading inputs -----------------------------------------------------------------------


def _require(value: Any, fields: dict[str, type | tuple[type, ...]], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unreadable(f"{what} is not a JSON object")
    for field, kind in fields.items():
        if field not in value:
            raise Unreadable(f"{what} lacks {field!r}")
        if not isinstance(value[field], kind) or (kind is not bool and isinstance(value[field], bool)):
            raise Unreadable(f"{what}'s {field!r} is not the expected kind")
    return value


CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "origin": str,
    "tree_size": int,
    "root_hash": str,
    "issued_at": str,
    "signature": str,
    "body": str,
}
PROOF_FIELDS: dict[str, type | tuple[type, ...]] = {"first_size": int, "second_size": int, "path": list}


def read_checkpoint(value: Any, what: str = "the checkpoint") -> dict[str, Any]:
    return _require(value, CHECKPOINT_FIELDS, what)


def read_proof(value: Any, what: str = "the consistency proof") -> dict[str, Any]:
    return _require(value, PROOF_FIELDS, what)


def read_bundle(value: Any, what: str = "the bundle") -> dict[str, Any]:
    bundle = _require(
        value,
        {"account_chain": str, "entries": list, "head": dict, "checkpoint": dict, "inclusion": dict},
        what,
    )
    head = _require(bundle["head"], {"seq": int, "hash": str, "deleted": bool}, f"{what}'s head")
    if head["seq"] < 0 or not HEX_HASH.fullmatch(head["hash"]):
        raise Unreadable(f"{what}'s head is malformed")
    if not all(isinstance(entry, dict) for entry in bundle["entries"]):
        raise Unreadable(f"{what}'s entries are not JSON objects")
    read_checkpoint(bundle["checkpoint"], f"{what}'s checkpoint")
    _require(bundle["inclusion"], {"leaf_index": int, "tree_size": int, "path": list}, f"{what}'s inclusion proof")
    if bundle.get("consistency") is not None:
        read_proof(bundle["consistency"], f"{what}'s consistency proof")
    if "public_key_pem" in bundle and not isinstance(bundle["public_key_pem"], str):
        raise Unreadable(f"{what}'s public_key_pem is not text")
    return bundle


# --- the two verifications ------------------------------------------------------------------


def verify_trail(
    bundle: dict[str, Any],
    public_key_pem: bytes | None = None,
    saved: dict[str, Any] | None = None,
    consistency: dict[str, Any] | None = None,
) -> list[Check]:
    """Checks a trail bundle; `saved` is an earlier checkpoint (or whole earlier bundle) kept by the reader."""
    bundle = read_bundle(bundle)
    if public_key_pem is None:
        if "public_key_pem" not in bundle:
            raise Unreadable("no public key: pass one, or a bundle that carries it")
        public_key_pem = read_key(bundle["public_key_pem"].encode("utf-8"), "the bundle's public key")
    else:
        public_key_pem = read_key(public_key_pem)
    chain_id, head, checkpoint = bundle["account_chain"], bundle["head"], bundle["checkpoint"]
    checks = [
        check_chain(bundle["entries"], head),
        check_inclusion(chain_id, head, bundle["inclusion"], checkpoint),
        check_checkpoint(checkpoint, public_key_pem),
    ]
    if saved is not None:
        earlier_bundle = read_bundle(saved, "the saved bundle") if "checkpoint" in saved else None
        old = earlier_bundle["checkpoint"] if earlier_bundle else read_checkpoint(saved, "the saved checkpoint")
        proof = read_proof(consistency) if consistency is not None else bundle.get("consistency")
        checks.append(check_checkpoint(old, public_key_pem, "saved signature"))
        checks.append(check_consistency(old, checkpoint, proof))
        if earlier_bundle is not None:
            checks.append(check_earlier_head(earlier_bundle, chain_id, bundle))
    return checks


def verify_checkpoints(
    old: dict[str, Any], new: dict[str, Any], proof: dict[str, Any], public_key_pem: bytes
) -> list[Check]:
    """Both checkpoints are signed, and the new one's tree extends the old one's."""
    old, new, proof = (
        read_checkpoint(old, "the old checkpoint"),
        read_checkpoint(new, "the new checkpoint"),
        read_proof(proof),
    )
    public_key_pem = read_key(public_key_pem)
    return [
        check_checkpoint(old, public_key_pem, "old signature"),
        check_checkpoint(new, public_key_pem, "new signature"),
        check_consistency(old, new, proof),
    ]


def _load_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unreadable(f"{path}: {exc}") from exc


def _load_key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Unreadable(f"{path}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orderpally_verify", description=SUMMARY)
    commands = parser.add_subparsers(dest="command", required=True)
    trail = commands.add_parser("trail", help="a trail bundle: its chain, its head's inclusion, the signatures")
    trail.add_argument("bundle")
    trail.add_argument("--checkpoint", help="an earlier checkpoint (or bundle) you kept")
    trail.add_argument("--public-key", help="OrderPally's checkpoint key (PEM); else the bundle's")
    trail.add_argument("--consistency", help="a consistency proof from --checkpoint's size (else the bundle's)")
    pair = commands.add_parser("consistency", help="two checkpoints: both signed, the newer extends the older")
    pair.add_argument("old")
    pair.add_argument("new")
    pair.add_argument("proof")
    pair.add_argument("--public-key", required=True)
    args = parser.parse_args(argv)
    try:
        key = _load_key(args.public_key) if args.public_key else None
        if args.command == "trail":
            checks = verify_trail(
                _load_json(args.bundle),
                key,
                _load_json(args.checkpoint) if args.checkpoint else None,
                _load_json(args.consistency) if args.consistency else None,
            )
        else:
            assert key is not None  # argparse requires it
            checks = verify_checkpoints(_load_json(args.old), _load_json(args.new), _load_json(args.proof), key)
    except Unreadable as exc:
        print(f"unreadable input: {exc}", file=sys.stderr)
        return 2
    for check in checks:
        print(check.line())
    return 0 if all(check.ok for check in checks) else 1

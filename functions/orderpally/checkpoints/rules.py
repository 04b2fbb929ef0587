"""The checkpoints' Merkle tree, leaves and notes: plain rules, no I/O.

The tree is RFC 9162 §2.1's: leaf hash SHA-256(0x00 || leaf), node hash
SHA-256(0x01 || left || right), the empty tree's hash SHA-256(""), and a tree
of n > 1 leaves split at the largest power of two below n. Functions take leaf
*hashes* (`leaf_hash`), so a tree is hashed once, level by level.

The log of checkpoints is append-only: each checkpoint appends a batch of leaves
(`checkpoint_leaves`: chain heads in chain_id order, a deleted chain's as a
tombstone) to the tree the previous checkpoint signed, so a consistency proof
(§2.1.4) shows a later checkpoint extends an earlier one. Re-sorting every head
into a fresh tree each time would leave nothing to prove.

A checkpoint's signed text is a C2SP "checkpoint" note body (`checkpoint_body`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
ISSUED_AT = "issued_at"  # the note's one extension line: `issued_at <RFC 3339 UTC>`
MAX_TREE_SIZE = 2**63 - 1
HEAD_HASH = re.compile(r"[0-9a-f]{64}")
DECIMAL = re.compile(r"0|[1-9][0-9]*")
RFC3339_UTC = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,6})?Z")


# --- the tree (RFC 9162 §2.1) ------------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last.

    Pairing left to right and lifting an odd last node unchanged builds RFC 9162's
    tree: level h, node j is the hash of leaves [j * 2**h, min((j + 1) * 2**h, n)).
    """
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(above)
    return levels


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaves whose hashes are given."""
    return tree_levels(leaf_hashes)[-1][0] if leaf_hashes else EMPTY_ROOT


def _split(size: int) -> int:
    """The largest power of two below `size` (> 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def _subtree(levels: list[list[bytes]], start: int, end: int) -> bytes:
    """MTH(D[start:end]) of a subtree the RFC's recursion reaches (start is aligned to its height)."""
    height = (end - start - 1).bit_length()
    return levels[height][start >> height]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) (§2.1.3.1), the leaf's sibling first."""
    return inclusion_proof_in(tree_levels(leaf_hashes), index)


def inclusion_proof_in(levels: list[list[bytes]], index: int) -> list[bytes]:
    """As `inclusion_proof`, over a tree's `tree_levels`: one proof per leaf costs no rehashing."""
    size = len(levels[0])
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    top_down, start, end = [], 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            top_down.append(_subtree(levels, start + k, end))
            end = start + k
        else:
            top_down.append(_subtree(levels, start, start + k))
            start += k
    return top_down[::-1]


def consistency_proof(leaf_hashes: Sequence[bytes], first_size: int) -> list[bytes]:
    """PROOF(first_size, D[n]) (§2.1.4.1): the tree of the first `first_size` leaves is a prefix of this one."""
    return consistency_proof_in(tree_levels(leaf_hashes), first_size)


def consistency_proof_in(levels: list[list[bytes]], first_size: int) -> list[bytes]:
    """As `consistency_proof`, over a tree's `tree_levels`."""
    size = len(levels[0])
    if not 0 <= first_size <= size:
        raise ValueError(f"a tree of {first_size} is not a prefix of one of {size}")
    if first_size in (0, size):
        return []  # the empty tree is a prefix of every tree, and every tree of itself
    top_down, start, end, whole = [], 0, size, True
    # SUBPROOF(m, D[start:end], whole), unrolled: m is first_size - start.
    while first_size - start != end - start:
        k = _split(end - start)
        if first_size - start <= k:
            top_down.append(_subtree(levels, start + k, end))
            end = start + k
        else:
            top_down.append(_subtree(levels, start, start + k))
            start, whole = start + k, False
    if not whole:
        top_down.append(_subtree(levels, start, end))
    return top_down[::-1]


# --- the leaves: chain heads ---------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """A chain's newest entry (seq 0 and audit.GENESIS for a chain with none); a tombstone once deleted."""

    chain_id: str
    seq: int
    head_hash: str
    deleted: bool = False


def head_leaf(chain_id: str, seq: int, head_hash: str, deleted: bool) -> bytes:
    """A chain head's leaf: UTF-8 of the canonical JSON object
    {"chain_id": str, "deleted": bool, "head_hash": 64 lowercase hex, "seq": int >= 0}
    with sorted keys, separators (",", ":") and no ASCII escaping, e.g.
    {"chain_id":"acc1","deleted":false,"head_hash":"00…00","seq":0}."""
    if not isinstance(chain_id, str) or not chain_id:
        raise ValueError("a chain head needs its chain_id")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"not a chain's seq: {seq!r}")
    if not isinstance(head_hash, str) or not HEAD_HASH.fullmatch(head_hash):
        raise ValueError(f"not a chain's head hash: {head_hash!r}")
    if not isinstance(deleted, bool):
        raise ValueError(f"deleted is true or false, not {deleted!r}")
    content = {"chain_id": chain_id, "deleted": deleted, "head_hash": head_hash, "seq": seq}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def checkpoint_leaves(heads: Iterable[ChainHead]) -> list[bytes]:
    """The batch of leaves one checkpoint appends: each head once, by chain_id (code point order)."""
    ordered = sorted(heads, key=lambda head: head.chain_id)
    for before, after in itertools.pairwise(ordered):
        if before.chain_id == after.chain_id:
            raise ValueError(f"chain {after.chain_id!r} has two heads")
    return [head_leaf(h.chain_id, h.seq, h.head_hash, h.deleted) for h in ordered]


# --- the signed note (C2SP checkpoint) -------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    issued_at: str  # RFC 3339, UTC ("Z")


def rfc3339_utc(moment: datetime) -> str:
    """`moment` as a checkpoint's issued_at, to the second: 2025-01-31T09:30:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkpoint_body(origin: str, size: int, root: bytes, issued_at: str) -> str:
    """The text a checkpoint's signature covers (as UTF-8):

        <origin>
        <tree size, decimal>
        <root hash, base64>
        issued_at <RFC 3339 UTC>

    each line ending in "\\n"."""
    _check_origin(origin)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"not a tree size: {size!r}")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise ValueError("a root hash is 32 bytes")
    _check_issued_at(issued_at)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n{ISSUED_AT} {issued_at}\n"


def parse_checkpoint_body(body: str) -> Checkpoint:
    """The checkpoint `body` states; ValueError unless it is exactly what `checkpoint_body` writes."""
    if not isinstance(body, str) or not body.endswith("\n"):
        raise ValueError("a checkpoint ends with a newline")
    lines = body[:-1].split("\n")
    if len(lines) != 4:
        raise ValueError(f"a checkpoint has 4 lines, not {len(lines)}")
    origin, size_line, root_line, extension = lines
    _check_origin(origin)
    if not DECIMAL.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
        raise ValueError(f"not a tree size: {size_line!r}")
    try:
        root_hash = base64.b64decode(root_line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {root_line!r}") from exc
    if len(root_hash) != HASH_SIZE or base64.b64encode(root_hash).decode("ascii") != root_line:
        raise ValueError("a root hash is 32 bytes in canonical base64")
    name, _, issued_at = extension.partition(" ")
    if name != ISSUED_AT:
        raise ValueError(f"unknown checkpoint extension: {extension!r}")
    _check_issued_at(issued_at)
    return Checkpoint(origin, int(size_line), root_hash, issued_at)


def _check_origin(origin: str) -> None:
    if not isinstance(origin, str) or not origin or origin != origin.strip() or not origin.isprintable():
        raise ValueError(f"not a checkpoint origin: {origin!r}")


def _check_issued_at(issued_at: str) -> None:
    match = RFC3339_UTC.fullmatch(issued_at) if isinstance(issued_at, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 UTC time: {issued_at!r}")
    try:
        datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 UTC time: {issued_at!r} ({exc})") from exc


# --- the published JSON (the verifier's formats; see tools/orderpally_verify) -----------------


def checkpoint_json(body: str, key_id: str, signature: bytes) -> dict[str, Any]:
    """A signed checkpoint as published: its parsed fields, the signature over `body` and `body` itself."""
    note = parse_checkpoint_body(body)
    return {
        "origin": note.origin,
        "tree_size": note.size,
        "root_hash": base64.b64encode(note.root).decode("ascii"),
        "issued_at": note.issued_at,
        "key_id": key_id,
        "signature": base64.b64encode(signature).decode("ascii"),
        "body": body,
    }


def inclusion_json(leaf_index: int, tree_size: int, path: Sequence[bytes]) -> dict[str, Any]:
    return {"leaf_index": leaf_index, "tree_size": tree_size, "path": [base64.b64encode(p).decode() for p in path]}


def consistency_json(first_size: int, second_size: int, path: Sequence[bytes]) -> dict[str, Any]:
    return {"first_size": first_size, "second_size": second_size, "path": [base64.b64encode(p).decode() for p in path]}

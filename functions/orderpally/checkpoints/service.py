"""Signed checkpoints over every audit chain's head, and the proofs a customer checks them with.

The log is append-only, as RFC 9162's: each run appends one leaf per chain whose head moved
since the last checkpoint (its new seq and hash), and a tombstone for each chain that is
gone, then signs the Merkle root over the whole log. So anyone holding an earlier
checkpoint can ask for a consistency proof that the log was only appended to, and a chain
deleted with its head and entries still has its last head in every later checkpoint,
followed by a tombstone; a chain gone without a deletion certificate raises an alert.
A customer's proof is their chain's newest leaf, its inclusion in the latest checkpoint,
and their trail up to that head (tools/orderpally_verify checks it all offline).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import audit, events, structured_logging, web
from orderpally.checkpoints import rules, store
from orderpally.checkpoints.rules import ChainHead

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from orderpally.checkpoints.signing import Signer

LEASE = timedelta(minutes=9)  # the schedule's timeout (540 s) and a little
# The schedule runs hourly; a checkpoint is signed once a day, and within the hour after a
# deletion (so the deleted chain's tombstone is committed at once), when something moved.
DAILY = timedelta(hours=23, minutes=30)
ALERT_CHAIN_VANISHED = "audit-chain-vanished"
HISTORY_PAGE = 50

_log = structured_logging.get_logger("orderpally.checkpoints")


@dataclass(frozen=True)
class Ports:
    db: Client
    signer: Signer
    origin: str  # the log's name in each checkpoint: the service's public host and /audit
    now: Callable[[], datetime]
    # Whether a vanished chain's account is being deleted as the agreement says (its certificate).
    deletion_started: Callable[[str], bool]
    # Whether any account's deletion was certified after the moment.
    deleted_since: Callable[[datetime], bool]
    # The chains' heads in `db` as they are: (chain id, seq, head hash); audit.heads in production.
    heads: Callable[[Client], Iterable[tuple[str, int, str]]] = audit.heads
    # Links what writers staged first, so a checkpoint holds every entry made before it.
    link_pending: Callable[[Client], object] = audit.link_stragglers


def origin_of(public_base_url: str) -> str:
    """The log's name in its checkpoints: the service's host and /audit (C2SP checkpoint origin)."""
    from urllib.parse import urlsplit

    return f"{urlsplit(public_base_url).netloc or 'orderpally.local'}/audit"


def _leaf_hashes(log: list[ChainHead]) -> list[bytes]:
    return [rules.leaf_hash(rules.head_leaf(h.chain_id, h.seq, h.head_hash, h.deleted)) for h in log]


def _latest(db: Client) -> dict[str, Any] | None:
    newest = store.newest_checkpoints(db, 1)
    return newest[0] if newest else None


def moved_heads(logged: list[ChainHead], current: Iterable[tuple[str, int, str]]) -> tuple[list[ChainHead], list[str]]:
    """What a run appends: the heads that moved (or are new) since the log last saw them, and a
    tombstone for each chain gone since; and the ids of the chains gone."""
    last = {head.chain_id: head for head in logged}  # the log's newest leaf of each chain
    seen: set[str] = set()
    appended: list[ChainHead] = []
    for chain_id, seq, head_hash in current:
        seen.add(chain_id)
        before = last.get(chain_id)
        if before is None or before.deleted or (before.seq, before.head_hash) != (seq, head_hash):
            appended.append(ChainHead(chain_id, seq, head_hash))
    gone = sorted(chain_id for chain_id, head in last.items() if not head.deleted and chain_id not in seen)
    appended += [ChainHead(chain_id, last[chain_id].seq, last[chain_id].head_hash, deleted=True) for chain_id in gone]
    return appended, gone


def due(latest: dict[str, Any] | None, now: datetime, deleted_since: Callable[[datetime], bool]) -> bool:
    if latest is None:
        return True
    issued = datetime.fromisoformat(str(latest["issued_at"]))
    return now - issued >= DAILY or deleted_since(issued)


def publish(ports: Ports, *, force: bool = False) -> dict[str, Any]:
    """Appends what moved and signs a new checkpoint, when one is due (`force`: now); nothing
    when nothing moved. One run at a time."""
    db, now = ports.db, ports.now()
    if not store.claim_run(db, now, LEASE):
        raise events.RetryableError("another checkpoint run holds the log")
    try:
        latest = _latest(db)
        size = int(latest["tree_size"]) if latest else 0
        if not force and not due(latest, now, ports.deleted_since):
            return {"tree_size": size, "appended": 0, "gone": 0, "due": False}
        log = store.leaves(db, size)
        ports.link_pending(ports.db)
        appended, gone = moved_heads(log, ports.heads(ports.db))
        for chain_id in gone:
            if not ports.deletion_started(chain_id):
                structured_logging.log(
                    _log,
                    logging.ERROR,
                    "audit chain gone without a deletion",
                    chain_id=chain_id,
                    alert=ALERT_CHAIN_VANISHED,
                )
        if not appended and latest is not None:
            return {"tree_size": size, "appended": 0, "gone": 0}
        ordered = sorted(appended, key=lambda head: head.chain_id)  # as checkpoint_leaves orders them
        full = log + ordered
        store.write_leaves(db, full, size)
        root = rules.root(_leaf_hashes(log) + [rules.leaf_hash(leaf) for leaf in rules.checkpoint_leaves(appended)])
        body = rules.checkpoint_body(ports.origin, len(full), root, rules.rfc3339_utc(ports.now()))
        signed = rules.checkpoint_json(body, ports.signer.key_id, ports.signer.sign(body.encode("utf-8")))
        # Beside the signed fields, for convenience: a verifier should hold the key from elsewhere
        # (Terraform's checkpoint_public_key_pem output, published apart from the service).
        signed["public_key_pem"] = ports.signer.public_key_pem().decode("ascii")
        store.save_checkpoint(db, signed)
        structured_logging.log(
            _log, logging.INFO, "checkpoint signed", tree_size=len(full), appended=len(ordered), gone=len(gone)
        )
        return {"tree_size": len(full), "appended": len(ordered), "gone": len(gone)}
    finally:
        store.release_run(db, ports.now())


# --- reads: the public log and a customer's proof ------------------------------------------


def no_checkpoint() -> web.Problem:
    return web.Problem(404, "checkpoint-not-found", "Not found", "No such checkpoint.")


def latest_checkpoint(db: Client) -> dict[str, Any]:
    latest = _latest(db)
    if latest is None:
        raise no_checkpoint()
    return latest


def history(db: Client, limit: int, below_size: int | None) -> list[dict[str, Any]]:
    return store.newest_checkpoints(db, limit, below_size)


def consistency(db: Client, first_size: int, second_size: int) -> dict[str, Any]:
    """The proof that checkpoint `second_size` extends checkpoint `first_size`, with both."""
    if not 0 < first_size <= second_size:
        raise web.Problem(
            422, "invalid-request", "Invalid request", "first must be at least 1 and at most second.", field="first"
        )
    first, second = store.checkpoint(db, first_size), store.checkpoint(db, second_size)
    if first is None or second is None:
        raise no_checkpoint()
    levels = rules.tree_levels(_leaf_hashes(store.leaves(db, second_size)))
    path = rules.consistency_proof_in(levels, first_size)
    return {"first": first, "second": second, "consistency": rules.consistency_json(first_size, second_size, path)}


def redacted(entry: dict[str, Any], shown: dict[str, Any]) -> dict[str, Any]:
    """An entry as the customer's proof carries it: whole, or (where the customer is not shown
    all of it: a staff member's id and address) only what links it into the chain."""
    if shown == entry:
        return entry
    return {"seq": entry["seq"], "prev_hash": entry["prev_hash"], "hash": entry["hash"], "redacted": True} | {
        key: value for key, value in shown.items() if key not in ("id", "hash", "prev_hash", "seq")
    }


def trail_proof(
    db: Client,
    chain_id: str,
    entries_up_to: Callable[[int], list[dict[str, Any]]],
    as_shown: Callable[[dict[str, Any]], dict[str, Any]],
    since: int | None = None,
) -> dict[str, Any]:
    """The customer's trail up to its head in the latest checkpoint, with the proof of that head's
    inclusion (tools/orderpally_verify's bundle), and with `since` (the size of a checkpoint the
    customer kept) the proof that the latest extends it. `entries_up_to(seq)` reads the chain
    oldest first."""
    latest = latest_checkpoint(db)
    if since is not None and (since > int(latest["tree_size"]) or store.checkpoint(db, since) is None):
        raise no_checkpoint()
    log = store.leaves(db, int(latest["tree_size"]))
    index = next((i for i in range(len(log) - 1, -1, -1) if log[i].chain_id == chain_id), None)
    if index is None:
        raise web.Problem(
            409, "not-checkpointed-yet", "Not checkpointed yet", "The trail is in the next checkpoint; try again later."
        )
    head = log[index]
    entries = [redacted(entry, as_shown(entry)) for entry in entries_up_to(head.seq)]
    levels = rules.tree_levels(_leaf_hashes(log))
    extends = {}
    if since is not None:
        path = rules.consistency_proof_in(levels, since)
        extends = {"consistency": rules.consistency_json(since, len(log), path)}
    return extends | {
        "account_chain": chain_id,
        "entries": entries,
        "head": {"seq": head.seq, "hash": head.head_hash, "deleted": head.deleted},
        "checkpoint": latest,
        "inclusion": rules.inclusion_json(index, len(log), rules.inclusion_proof_in(levels, index)),
        "public_key_pem": latest.get("public_key_pem"),
    }

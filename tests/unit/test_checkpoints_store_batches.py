"""The checkpoint log's writes fit the limits of one Firestore commit at 100,000 chains with
the longest chain ids: a commit of 40 chunks (4.8 MB) was refused by the emulator's 4 MiB
gRPC limit. Only the batching is under test: the batch records what would be committed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import Document

from orderpally.checkpoints import store
from orderpally.checkpoints.rules import ChainHead

GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024  # under production's 10 MiB per commit
FIRESTORE_WRITES_PER_COMMIT = 500
FIRESTORE_DOCUMENT_LIMIT = 1024 * 1024


@dataclass
class RecordingBatch:
    commits: list[list[tuple[str, dict[str, Any]]]]
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def set(self, ref: str, data: dict[str, Any]) -> None:
        self.writes.append((ref, data))

    def commit(self) -> None:
        self.commits.append(self.writes)


class RecordingDb:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, dict[str, Any]]]] = []

    def batch(self) -> RecordingBatch:
        return RecordingBatch(self.commits)

    def collection(self, name: str) -> Any:
        class Collection:
            def document(self, doc_id: str) -> str:
                return f"projects/p/databases/(default)/documents/{name}/{doc_id}"

        return Collection()


def encoded_size(name: str, data: dict[str, Any]) -> int:
    return Document.pb(Document(name=name, fields=_helpers.encode_dict(data))).ByteSize()


def test_a_hundred_thousand_longest_chain_ids_are_written_in_commits_firestore_accepts():
    chains = 100_000
    log = [ChainHead(f"{n:0{store.MAX_CHAIN_ID_LENGTH}d}", 2**40, "f" * 64, n % 7 == 0) for n in range(chains)]
    db = RecordingDb()
    store.write_leaves(db, log, 0)  # type: ignore[arg-type]  # records what a Client would commit

    written = [write for commit in db.commits for write in commit]
    assert [name.rsplit("/", 1)[1] for name, _ in written] == [f"{n:08d}" for n in range(-(-chains // store.CHUNK))]
    assert sum(len(data["leaves"]) for _, data in written) == chains
    assert all(len(commit) <= FIRESTORE_WRITES_PER_COMMIT for commit in db.commits)
    # Every leaf has the longest id and the same digest, so the first commit is as large as any
    # full one, and the last is the only one of another shape. Encoding every commit took 20 s.
    for commit in (db.commits[0], db.commits[-1]):
        sizes = [encoded_size(name, data) for name, data in commit]
        assert max(sizes) < FIRESTORE_DOCUMENT_LIMIT
        assert sum(sizes) < GRPC_MESSAGE_LIMIT, f"a commit of {sum(sizes)} bytes"

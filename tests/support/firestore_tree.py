"""Walks the Firestore emulator's whole tree with the real client, sub-collections included."""

from __future__ import annotations

from typing import Any

# Documents of one collection tend to have the same sub-collections: looking under a sample
# keeps the walk quick after a test that wrote thousands.
SAMPLE = 25


def collection_paths(db: Any, sample: int = SAMPLE) -> set[str]:
    """Every collection path that holds documents, or documents' sub-collections.

    `list_documents` also lists parents that exist only through their sub-collections, which a
    query would miss, and Firestore keeps those when the parent is deleted."""
    found: set[str] = set()
    pending = list(db.collections())
    while pending:
        collection = pending.pop()
        found.add("/".join(collection._path))
        for index, ref in enumerate(collection.list_documents(page_size=sample)):
            if index >= sample:
                break
            pending.extend(ref.collections())
    return found

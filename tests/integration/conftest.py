"""Every collection an integration test leaves behind must be classified by the data map.

The data map is what deletion, export and records requests read (agreement 3.2(b)(i)); a
collection the code writes but the map does not name is never deleted or retained on purpose.
Walking the emulator after each test checks what the code really wrote, sub-collections
included, so the check cannot fall behind the code the way a list or a grep can.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orderpally import clients
from orderpally.lifecycle import data_map
from support import firestore_tree

# Collections tests make for their own sake, not the service's.
TEST_ONLY = {"index_probe", "write_limit_probe", "outbox_test_changes"}


@pytest.fixture(autouse=True)
def written_collections_are_in_the_data_map(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emulators" not in request.fixturenames:
        return
    known = data_map.load()
    paths = firestore_tree.collection_paths(clients.firestore_client())
    missing = sorted(p for p in paths if p.split("/")[0] not in TEST_ONLY and not known.classifies(p))
    assert missing == [], f"add these to functions/orderpally/lifecycle/data_map.yaml: {missing}"

"""Queries reach Firestore through the IAM proxy, which refuses what production's indexes cannot serve."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore

from orderpally import clients

pytestmark = pytest.mark.usefixtures("emulators")
INDEX_PROBE = "index_probe"  # the one collection tests/conftest.py lets need a missing index


def test_a_query_needing_an_undeclared_composite_index_fails_as_in_production():
    db = clients.firestore_client()
    db.collection(INDEX_PROBE).document("a").set({"kind": "x", "at": 1})
    served = db.collection(INDEX_PROBE).where(filter=firestore.FieldFilter("kind", "==", "x"))
    assert [s.id for s in served.stream()] == ["a"]  # equality only: single-field indexes merge
    needing = served.where(filter=firestore.FieldFilter("at", ">", 0))
    with pytest.raises(exceptions.FailedPrecondition) as refused:
        list(needing.stream())
    assert str(refused.value.message).startswith("The query requires an index.")
    assert "kind ASCENDING, at ASCENDING" in refused.value.message
    with pytest.raises(exceptions.FailedPrecondition):  # aggregations too
        needing.count().get()


def test_a_commit_of_more_than_500_writes_fails_as_in_production():
    db = clients.firestore_client()
    probe = db.collection("write_limit_probe")
    too_many = db.batch()
    for n in range(501):
        too_many.set(probe.document(f"d{n}"), {"n": n})
    with pytest.raises(exceptions.InvalidArgument, match="maximum 500 writes"):
        too_many.commit()
    assert list(probe.limit(1).stream()) == []  # nothing of it was written
    enough = db.batch()
    for n in range(500):
        enough.set(probe.document(f"d{n}"), {"n": n})
    enough.commit()
    assert probe.count().get()[0][0].value == 500

"""Firestore's rules for which queries need which index, on plain data (infra/local/firestore_indexes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firestore_indexes import (
    ASCENDING,
    COLLECTION_GROUP,
    CONTAINS,
    DESCENDING,
    CompositeIndex,
    Condition,
    FieldOverride,
    Indexes,
    Junction,
    Query,
    load_terraform,
    missing_index,
)

NONE = Indexes()
ASC, DESC = ASCENDING, DESCENDING


def conj(*conditions: tuple[str, str]) -> Junction:
    return Junction("AND", tuple(Condition(f, op) for f, op in conditions))


def test_equality_only_queries_merge_single_field_indexes():
    query = Query("api_keys", where=conj(("account_id", "EQUAL"), ("revoked_at", "IS_NULL"), ("kind", "IN")))
    assert missing_index(query, NONE) is None


def test_array_contains_counts_as_equality_in_its_own_mode():
    query = Query("incidents", where=conj(("intake_pending", "ARRAY_CONTAINS_ANY"), ("state", "EQUAL")))
    assert missing_index(query, NONE) is None
    ranged = Query("incidents", where=conj(("tags", "ARRAY_CONTAINS"), ("at", "GREATER_THAN")))
    need = missing_index(ranged, NONE)
    assert need is not None
    assert need.fields == (("tags", CONTAINS), ("at", ASC))
    assert missing_index(ranged, Indexes((CompositeIndex("incidents", (("tags", CONTAINS), ("at", ASC))),))) is None
    wrong_mode = Indexes((CompositeIndex("incidents", (("tags", ASC), ("at", ASC))),))
    assert missing_index(ranged, wrong_mode) is not None


@pytest.mark.parametrize(
    "query",
    [
        Query("outbox", where=Condition("staged_at", "LESS_THAN_OR_EQUAL")),
        Query("entries", where=conj(("at", "GREATER_THAN_OR_EQUAL"), ("at", "LESS_THAN"))),
        Query("snapshots", orders=(("slot", DESC),)),
        Query(
            "notices",
            where=Condition("first_published_at", "LESS_THAN_OR_EQUAL"),
            orders=(("first_published_at", DESC), ("__name__", DESC)),
        ),
        Query("jobs", where=Condition("status", "NOT_EQUAL")),
        Query("accounts", orders=(("__name__", ASC),)),
    ],
)
def test_one_field_ranged_or_ordered_needs_only_its_single_field_index(query):
    assert missing_index(query, NONE) is None


def test_equality_then_range_on_another_field_needs_a_composite():
    query = Query(
        "notices",
        where=conj(("first_published_at", "LESS_THAN_OR_EQUAL"), ("kind", "EQUAL")),
        orders=(("first_published_at", DESC), ("__name__", DESC)),
    )
    need = missing_index(query, NONE)
    assert need is not None
    assert not need.single_field
    assert need.fields == (("kind", ASC), ("first_published_at", DESC))
    assert "composite index on collection 'notices'" in need.describe()
    declared = Indexes((CompositeIndex("notices", (("kind", ASC), ("first_published_at", DESC))),))
    assert missing_index(query, declared) is None
    # The equality field's direction does not matter; the order field's does, unless all are reversed.
    assert (
        missing_index(query, Indexes((CompositeIndex("notices", (("kind", DESC), ("first_published_at", DESC))),)))
        is None
    )
    assert (
        missing_index(query, Indexes((CompositeIndex("notices", (("kind", ASC), ("first_published_at", ASC))),)))
        is None
    )
    # ... but the fields must be these, on this collection and scope.
    assert (
        missing_index(query, Indexes((CompositeIndex("news", (("kind", ASC), ("first_published_at", DESC))),)))
        is not None
    )
    assert (
        missing_index(query, Indexes((CompositeIndex("notices", (("first_published_at", DESC), ("kind", ASC))),)))
        is not None
    )
    group = Indexes((CompositeIndex("notices", (("kind", ASC), ("first_published_at", DESC)), COLLECTION_GROUP),))
    assert missing_index(query, group) is not None


def test_reversal_must_be_of_every_order_field():
    query = Query("t", orders=(("a", ASC), ("b", DESC)))
    assert missing_index(query, Indexes((CompositeIndex("t", (("a", DESC), ("b", ASC))),))) is None
    assert missing_index(query, Indexes((CompositeIndex("t", (("a", ASC), ("b", ASC))),))) is not None


def test_in_with_a_range_needs_the_composite_declared_for_it():
    query = Query("terminations", where=conj(("status", "IN"), ("terminate_at", "LESS_THAN_OR_EQUAL")))
    declared = Indexes((CompositeIndex("terminations", (("status", ASC), ("terminate_at", ASC))),))
    assert missing_index(query, declared) is None
    assert missing_index(query, NONE).fields == (("status", ASC), ("terminate_at", ASC))


def test_ordering_on_two_fields_and_inequalities_on_two_fields_need_composites():
    assert missing_index(Query("t", orders=(("a", ASC), ("b", ASC))), NONE) is not None
    both = Query("t", where=conj(("b", "GREATER_THAN"), ("a", "LESS_THAN")))
    # Unordered inequality fields are ordered lexicographically, ascending.
    assert missing_index(both, NONE).fields == (("a", ASC), ("b", ASC))
    assert missing_index(both, Indexes((CompositeIndex("t", (("a", ASC), ("b", ASC))),))) is None


def test_an_ordered_equality_field_orders_nothing():
    query = Query("t", where=Condition("a", "EQUAL"), orders=(("a", ASC),))
    assert missing_index(query, NONE) is None


def test_an_index_ending_in_name_serves_as_without_it():
    query = Query("t", where=Condition("a", "EQUAL"), orders=(("b", DESC),))
    assert missing_index(query, Indexes((CompositeIndex("t", (("a", ASC), ("b", DESC), ("__name__", DESC))),))) is None


def test_composites_with_the_same_order_suffix_merge_to_cover_equalities():
    query = Query("t", where=conj(("a", "EQUAL"), ("b", "EQUAL")), orders=(("c", ASC),))
    halves = Indexes((CompositeIndex("t", (("a", ASC), ("c", ASC))), CompositeIndex("t", (("b", ASC), ("c", ASC)))))
    assert missing_index(query, halves) is None
    assert missing_index(query, Indexes(halves.composites[:1])) is not None
    # An index with an equality field the query does not have cannot serve it.
    extra = Indexes((CompositeIndex("t", (("a", ASC), ("b", ASC), ("z", ASC), ("c", ASC))),))
    assert missing_index(query, extra) is not None


def test_or_queries_need_an_index_for_each_disjunction():
    where = Junction("OR", (conj(("a", "EQUAL"), ("t", "GREATER_THAN")), Condition("b", "EQUAL")))
    query = Query("c", where=where)
    assert missing_index(query, NONE).fields == (("a", ASC), ("t", ASC))
    assert missing_index(query, Indexes((CompositeIndex("c", (("a", ASC), ("t", ASC))),))) is None


def test_collection_group_queries_need_exemptions_even_for_one_field():
    assert missing_index(Query("pending", collection_group=True), NONE) is None  # __name__ only
    ordered = Query("entries", collection_group=True, orders=(("__name__", ASC),))
    assert missing_index(ordered, NONE) is None
    query = Query("entries", collection_group=True, where=Condition("at", "GREATER_THAN"))
    need = missing_index(query, NONE)
    assert need is not None
    assert need.single_field
    assert need.scope == COLLECTION_GROUP
    exempted = Indexes(overrides=(FieldOverride("entries", "at", frozenset({(COLLECTION_GROUP, ASC)})),))
    assert missing_index(query, exempted) is None
    equality = Query("entries", collection_group=True, where=Condition("action", "EQUAL"))
    assert missing_index(equality, NONE) is not None


def test_an_exemption_without_indexes_disables_the_field():
    query = Query("event_ledger", where=Condition("expire_at", "LESS_THAN"))
    disabled = Indexes(overrides=(FieldOverride("event_ledger", "expire_at"),))
    assert missing_index(query, disabled) is not None
    assert missing_index(Query("other", where=Condition("expire_at", "LESS_THAN")), disabled) is None


def test_terraform_declarations_are_read_with_for_each_and_exemptions(tmp_path: Path):
    (tmp_path / "firestore.tf").write_text(
        """
locals {
  expiring = toset(["a_log", "b_log"])
}

resource "google_firestore_field" "ttl" {
  for_each   = local.expiring
  collection = each.value
  field      = "expire_at"
  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "grouped" {
  collection = "entries"
  field      = "at"
  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
    indexes {
      array_config = "CONTAINS"
    }
  }
}

resource "google_firestore_index" "pair" {
  collection  = "t"
  query_scope = "COLLECTION_GROUP"
  fields {
    field_path   = "tags"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "at"
    order      = "DESCENDING"
  }
}
"""
    )
    indexes = load_terraform(tmp_path)
    assert indexes.composites == (CompositeIndex("t", (("tags", CONTAINS), ("at", DESC)), COLLECTION_GROUP),)
    overrides = {(o.collection, o.field): o.indexes for o in indexes.overrides}
    assert overrides[("a_log", "expire_at")] == frozenset()
    assert overrides[("b_log", "expire_at")] == frozenset()
    assert overrides[("entries", "at")] == frozenset({(COLLECTION_GROUP, ASC), ("COLLECTION", CONTAINS)})


def test_the_repository_terraform_parses():
    indexes = load_terraform(Path(__file__).resolve().parents[2] / "terraform")
    assert any(i.collection == "terminations" for i in indexes.composites)


def test_structured_queries_from_the_wire_become_plain_queries():
    from google.cloud.firestore_v1 import types

    request = types.RunQueryRequest(
        parent="projects/p/databases/(default)/documents",
        structured_query=types.StructuredQuery(
            from_=[types.StructuredQuery.CollectionSelector(collection_id="notices", all_descendants=True)],
            where=types.StructuredQuery.Filter(
                composite_filter=types.StructuredQuery.CompositeFilter(
                    op="AND",
                    filters=[
                        types.StructuredQuery.Filter(
                            field_filter=types.StructuredQuery.FieldFilter(
                                field=types.StructuredQuery.FieldReference(field_path="kind"), op="EQUAL"
                            )
                        ),
                        types.StructuredQuery.Filter(
                            unary_filter=types.StructuredQuery.UnaryFilter(
                                field=types.StructuredQuery.FieldReference(field_path="gone"), op="IS_NULL"
                            )
                        ),
                    ],
                )
            ),
            order_by=[
                types.StructuredQuery.Order(
                    field=types.StructuredQuery.FieldReference(field_path="at"), direction="DESCENDING"
                )
            ],
        ),
    )
    from firestore_indexes import from_structured_query

    wire = types.RunQueryRequest.deserialize(types.RunQueryRequest.serialize(request))
    query = from_structured_query(wire.structured_query)
    assert query == Query(
        "notices",
        collection_group=True,
        where=Junction("AND", (Condition("kind", "EQUAL"), Condition("gone", "IS_NULL"))),
        orders=(("at", DESC),),
    )


def test_the_staff_incident_list_is_served_newest_first_under_any_filters():
    indexes = load_terraform(Path(__file__).resolve().parents[2] / "terraform")
    newest = (("created_at", DESC),)
    for filters in [(), ("state",), ("severity",), ("state", "category"), ("state", "severity", "category")]:
        where = conj(*((name, "EQUAL") for name in filters)) if len(filters) > 1 else None
        if len(filters) == 1:
            where = Condition(filters[0], "EQUAL")
        assert missing_index(Query("incidents", where=where, orders=newest), indexes) is None, filters
    assert missing_index(Query("incidents", where=Condition("assignee", "EQUAL"), orders=newest), indexes)

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import yaml

from orderpally.lifecycle import data_map, rules

KEY = b"k" * 32


def test_pseudonyms_are_stable_keyed_and_unlinkable_without_the_key():
    assert rules.pseudonym("alice", KEY) == rules.pseudonym("alice", KEY)
    assert rules.pseudonym("alice", KEY) != rules.pseudonym("bob", KEY)
    assert rules.pseudonym("alice", KEY) != rules.pseudonym("alice", b"other key")
    assert "alice" not in rules.pseudonym("alice", KEY)
    assert rules.pseudonym("alice", KEY).startswith(rules.PSEUDONYM_PREFIX)


def test_pseudonymising_removes_personal_fields_and_replaces_the_owner():
    updates = rules.pseudonymised_fields("consumer_id", ["consumer_name", "shipping_address"], "alice", KEY)
    assert updates == {"consumer_name": None, "shipping_address": None, "consumer_id": rules.pseudonym("alice", KEY)}


@pytest.mark.parametrize(
    ("terminated", "years", "until"),
    [
        # The closing of a fiscal (calendar) year is completed by 30 April of the next at the latest.
        (date(2026, 11, 24), 5, date(2032, 4, 30)),
        (date(2026, 1, 1), 10, date(2037, 4, 30)),
        (date(2028, 2, 29), 5, date(2034, 4, 30)),
    ],
)
def test_retention_runs_from_the_annual_closing_of_the_records_year(terminated, years, until):
    assert rules.retained_until(terminated, years) == until


def test_a_class_not_counted_from_the_closing_runs_from_the_records_day():
    assert rules.retained_until(date(2026, 3, 2), 5, from_annual_closing=False) == date(2031, 3, 2)


@pytest.mark.parametrize(
    ("value", "day"),
    [
        (datetime(2019, 3, 1, 23, 0, tzinfo=UTC), date(2019, 3, 1)),
        ("2020-06-01", date(2020, 6, 1)),
        ("2020-06-01T10:00:00+08:00", date(2020, 6, 1)),
        (None, date(2026, 12, 1)),
        ("not a date", date(2026, 12, 1)),
    ],
)
def test_a_records_day_comes_from_its_dating_field_else_the_termination(value, day):
    assert rules.record_day(value, date(2026, 12, 1)) == day


def test_add_years_on_29_february():
    assert rules.add_years(date(2028, 2, 29), 1) == date(2029, 2, 28)
    assert rules.add_years(date(2028, 2, 29), 4) == date(2032, 2, 29)


def test_ramp_follows_500_50_5():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert rules.allowed_ops_per_second(start, start) == 500
    assert rules.allowed_ops_per_second(start, start + timedelta(minutes=4, seconds=59)) == 500
    assert rules.allowed_ops_per_second(start, start + timedelta(minutes=5)) == 750
    assert rules.allowed_ops_per_second(start, start + timedelta(minutes=10)) == 1125


def test_holds_cover_named_locations_or_everything_until_released():
    holds = [{"id": "h1", "location_ids": ["invoices"]}, {"id": "h2", "released_at": "x"}]
    assert rules.covered_by_hold("invoices", holds)["id"] == "h1"
    assert rules.covered_by_hold("orders_as_store", holds) is None
    assert rules.covered_by_hold("anything", [{"id": "all"}])["id"] == "all"
    assert rules.covered_by_hold("anything", [{"id": "all", "released_at": "t"}]) is None


def test_the_shipped_data_map_is_valid_and_retains_only_with_a_legal_basis():
    dm = data_map.load()
    for location in dm.locations:
        retention = dm.retention_of(location)
        if retention.action == "retain_pseudonymised":
            assert retention.legal_basis
            assert location.kind == "owned"
    # Every collection and sub-collection the map names has a class: nothing is kept forever.
    assert {"terminations", "breach_recipients"} <= {loc.collection for loc in dm.locations}
    assert {"history", "breach_recipients", "terminations"}.isdisjoint(dm.not_customer_data)
    assert dm.retention_classes["accounting_voucher"].years == 5
    assert dm.retention_classes["accounting_book"].years == 10


def a_document(data_map_yaml: dict) -> dict:
    return next(loc for loc in data_map_yaml["locations"] if loc["kind"] == "document")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["locations"].append(dict(m["locations"][0])), "unique"),
        (lambda m: m["locations"][0].update(retention="forever"), "unknown retention"),
        (lambda m: a_document(m).update(path="accounts/fixed"), "account_id"),
        (lambda m: m["retention_classes"]["accounting_book"].pop("legal_basis"), "legal basis"),
        (lambda m: a_document(m).update(retention="accounting_book"), "only owned"),
        (lambda m: a_document(m).update(ownerless=True), "ownerless"),
        (lambda m: a_document(m).update(objects="files[].name"), "bucket"),
        (lambda m: m["locations"][0].update(children=[{"collection": "fixed/history"}]), "document"),
    ],
)
def test_a_broken_data_map_is_refused(change, message):
    raw = yaml.safe_load(data_map.DATA_MAP_FILE.read_text())
    change(raw)
    with pytest.raises(ValueError, match=message):
        data_map.parse(yaml.safe_dump(raw, allow_unicode=True))


def test_a_retained_record_names_the_account_nowhere_after_pseudonymising():
    record = {
        "reporter_account_id": "alice",
        "description": "my shop",
        "attachments": [{"object": "alice/incidents/OPI-1/a.png", "size": 3}],
        "actor": {"kind": "customer", "id": "alice"},
        "note": "see alice/incidents and malice-x",
        "details": {"text": "Dear Alice", "number": 1},
    }
    out = rules.pseudonymised_record(
        record, "reporter_account_id", ["description", "attachments[].object", "details.text"], "alice", KEY
    )
    alias = rules.pseudonym("alice", KEY)
    assert out["reporter_account_id"] == alias
    assert out["description"] is None
    assert out["attachments"] == [{"object": None, "size": 3}]
    assert out["actor"] == {"kind": "customer", "id": alias}
    assert out["note"] == f"see {alias}/incidents and malice-x"  # whole ids only
    assert out["details"] == {"text": None, "number": 1}
    assert not rules.mentions(out, "alice")
    assert rules.mentions(record, "alice")
    assert rules.changed_fields(record, out).keys() == {
        "reporter_account_id",
        "description",
        "attachments",
        "actor",
        "note",
        "details",
    }


def test_values_at_reads_nested_and_listed_fields():
    data = {"attachments": [{"object": "a"}, {"object": None}, "x"], "m": {"f": "v"}, "top": ""}
    assert rules.values_at(data, "attachments[].object") == ["a"]
    assert rules.values_at(data, "m.f") == ["v"]
    assert rules.values_at(data, "top") == []
    assert rules.values_at({}, "attachments[].object") == []


def test_an_ownerless_record_expires_years_after_its_own_day():
    assert rules.is_expired(date(2026, 3, 2), 5, False, date(2031, 3, 2))
    assert not rules.is_expired(date(2026, 3, 2), 5, False, date(2031, 3, 1))
    assert rules.oldest_kept_day(date(2031, 3, 2), 5) == date(2026, 3, 2)


def test_the_data_map_classifies_sub_collections_by_their_parents():
    dm = data_map.load()
    assert dm.classifies("incidents/OPI-1/history")
    assert dm.classifies("incidents/OPI-1/breach_recipients")
    assert dm.classifies("audit_chains/incident-OPI-1/audit_pending")
    assert dm.classifies("accounts/a/audit_trail")
    assert not dm.classifies("incidents/OPI-1/stray")
    assert not dm.classifies("accounts/a/history")


def test_the_readmes_retention_table_matches_the_data_map():
    import re

    import local_stack

    readme = (local_stack.REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\s*\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", readme, re.MULTILINE)
    table = {name: (kept.strip(), start.strip()) for name, kept, start in rows}
    expected = {}
    for name, cls in data_map.load().retention_classes.items():
        if cls.action == "delete":
            expected[name] = ("—", "—")
        else:
            expected[name] = (f"{cls.years} years", "annual closing" if cls.from_annual_closing else "record date")
    assert table == expected

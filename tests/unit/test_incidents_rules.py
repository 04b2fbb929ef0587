"""Incident rules: references, transitions, deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderpally import web
from orderpally.incidents import rules

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_references_are_readable_and_do_not_repeat():
    refs = {rules.new_reference() for _ in range(2000)}
    assert len(refs) == 2000
    assert all(rules.REFERENCE.fullmatch(r) for r in refs)
    assert not any(ch in r[4:] for r in refs for ch in "ILOU")


@pytest.mark.parametrize(
    ("current", "target", "ok"),
    [
        ("received", "triaged", True),
        ("received", "resolved", False),
        ("triaged", "investigating", True),
        ("investigating", "resolved", True),
        ("resolved", "investigating", False),
        ("not_an_issue", "triaged", False),
        ("triaged", "triaged", True),
    ],
)
def test_transitions(current, target, ok):
    if ok:
        rules.check_transition(current, target)
    else:
        with pytest.raises(web.Problem):
            rules.check_transition(current, target)


def test_critical_categories_start_critical_and_deadlines_follow_severity():
    assert rules.provisional_severity("account_compromise") == "critical"
    assert rules.provisional_severity("other") == "medium"
    first, resolve = rules.deadlines("critical", NOW, rules.DEFAULT_DEADLINES)
    assert first == NOW + timedelta(hours=1)
    assert resolve == NOW + timedelta(hours=24)


def test_configured_deadlines_override_defaults_and_bad_ones_are_refused():
    table = rules.parse_deadlines("critical=2/12,low=100/1000")
    assert table["critical"] == (timedelta(hours=2), timedelta(hours=12))
    assert table["high"] == rules.DEFAULT_DEADLINES["high"]
    for bad in ("urgent=1/2", "critical=5/1", "critical=x/2"):
        with pytest.raises(ValueError, match="INCIDENT_DEADLINES"):
            rules.parse_deadlines(bad)


def test_due_alerts():
    incident = {
        "state": "received",
        "first_response_due": NOW + timedelta(minutes=30),
        "resolution_due": NOW - timedelta(minutes=1),
        "first_responded_at": None,
    }
    alerts = rules.due_alerts(incident, NOW, timedelta(hours=1))
    assert [(a.deadline, a.kind) for a in alerts] == [("first_response", "due_soon"), ("resolution", "overdue")]
    assert (
        rules.due_alerts({**incident, "first_responded_at": NOW}, NOW, timedelta(hours=1))[0].deadline == "resolution"
    )
    assert rules.due_alerts({**incident, "state": "resolved"}, NOW, timedelta(hours=1)) == []


def test_markup_is_recognised():
    assert rules.has_markup("<script>alert(1)</script>")
    assert rules.has_markup("see <img src=x>")
    assert rules.has_markup("<!-- hidden -->")
    assert not rules.has_markup("see < img src=x>")  # HTML reads a tag only right after "<"
    assert not rules.has_markup("a < b and c > d, ok")
    assert not rules.has_markup("price < 100 and 3 > 2")
    assert not rules.has_markup("訂單編號 <12345>")


@pytest.mark.parametrize(
    ("category", "confirmed", "has_account", "steps"),
    [
        # A signed-in customer's critical report: everything, the on-call page included.
        ("account_compromise", True, True, ["history", "acknowledgement", "customer_trail", "page"]),
        # A customer's ordinary report: no page.
        ("other", True, True, ["history", "acknowledgement", "customer_trail"]),
        # An anonymous critical report is paged once its address is confirmed, not at intake.
        ("suspected_data_leak", False, False, ["history", "acknowledgement"]),
        ("other", False, False, ["history", "acknowledgement"]),
    ],
)
def test_intake_queues_only_the_steps_a_report_needs(category, confirmed, has_account, steps):
    assert rules.intake_steps(category, confirmed, has_account) == steps

"""The one-month rule of clause 2.1, at the edges of months, years and time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pydantic
import pytest

from orderpally import web
from orderpally.notices import rules, service
from orderpally.notices.rules import Exemption, Timing

JUSTIFICATION = "Fixes an actively exploited vulnerability in sign-in."


def earliest(refused: web.Problem) -> date:
    """The earliest effective date a refusal names."""
    return date.fromisoformat(refused.extra["earliest_effective_date"])


def taipei(y: int, m: int, d: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(y, m, d, hour, minute, tzinfo=rules.TAIPEI)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2028, 1, 31), date(2028, 2, 29)),
        (date(2026, 3, 31), date(2026, 4, 30)),
        (date(2026, 12, 15), date(2027, 1, 15)),
        (date(2026, 12, 31), date(2027, 1, 31)),
        (date(2026, 2, 28), date(2026, 3, 28)),
    ],
)
def test_add_one_month_clamps_to_the_end_of_shorter_months(day, expected):
    assert rules.add_one_month(day) == expected


def test_one_day_short_is_refused_and_names_the_earliest_date():
    with pytest.raises(web.Problem) as refused:
        rules.check_timing(Timing(taipei(2026, 3, 10), date(2026, 4, 9)), None, None)
    assert earliest(refused.value) == date(2026, 4, 10)
    assert "2026-04-10" in refused.value.detail
    rules.check_timing(Timing(taipei(2026, 3, 10), date(2026, 4, 10)), None, None)


def test_month_end_publication():
    with pytest.raises(web.Problem):
        rules.check_timing(Timing(taipei(2026, 1, 31), date(2026, 2, 27)), None, None)
    rules.check_timing(Timing(taipei(2026, 1, 31), date(2026, 2, 28)), None, None)


def test_the_month_is_counted_from_the_taipei_date():
    # 16:30 UTC on 31 January is already 1 February in Taipei.
    published = datetime(2026, 1, 31, 16, 30, tzinfo=UTC)
    with pytest.raises(web.Problem) as refused:
        rules.check_timing(Timing(published, date(2026, 2, 28)), None, None)
    assert earliest(refused.value) == date(2026, 3, 1)


def test_an_exemption_with_justification_may_take_effect_at_publication_not_before():
    published = taipei(2026, 5, 5)
    rules.check_timing(Timing(published, date(2026, 5, 5)), Exemption.SECURITY_OR_IP, JUSTIFICATION)
    with pytest.raises(web.Problem) as refused:
        rules.check_timing(Timing(published, date(2026, 5, 4)), Exemption.FORCE_MAJEURE, JUSTIFICATION)
    assert earliest(refused.value) == date(2026, 5, 5)


@pytest.mark.parametrize("justification", [None, "", "   because        ", "too short"])
def test_an_exemption_without_a_written_justification_is_refused(justification):
    with pytest.raises(web.Problem) as refused:
        rules.check_timing(Timing(taipei(2026, 5, 5), date(2026, 9, 1)), Exemption.LEGAL_REQUIREMENT, justification)
    assert refused.value.slug == "exemption-unjustified"


def test_back_dating_is_refused_but_clock_skew_is_not():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(web.Problem) as refused:
        rules.publication_time(now - timedelta(days=1), now)
    assert refused.value.slug == "notice-backdated"
    assert rules.publication_time(now - timedelta(minutes=1), now) == now
    assert rules.publication_time(now + timedelta(days=3), now) == now + timedelta(days=3)
    assert rules.publication_time(None, now) == now


def test_clock_skew_cannot_back_date_a_notice_across_taipei_midnight():
    # Sent at 00:02 on 1 March (Taipei), asking for 23:58 the day before.
    now = taipei(2026, 3, 1, 0, 2)
    published = rules.publication_time(now - timedelta(minutes=4), now)
    assert rules.earliest_effective(published, None) == date(2026, 4, 1)
    with pytest.raises(web.Problem):
        rules.check_timing(Timing(published, date(2026, 3, 28)), None, None)


def test_every_correction_meets_the_rule_whatever_it_does_to_the_date():
    correction_time = taipei(2026, 7, 1)
    # Keeping the date, or moving it less than a month out, is a rewrite too close to the change.
    for effective in (date(2026, 7, 20), date(2026, 7, 31)):
        with pytest.raises(web.Problem) as refused:
            rules.check_correction(Timing(correction_time, effective), None, None)
        assert earliest(refused.value) == date(2026, 8, 1)
    rules.check_correction(Timing(correction_time, date(2026, 8, 30)), None, None)
    rules.check_correction(Timing(correction_time, date(2026, 7, 1)), Exemption.SECURITY_OR_IP, JUSTIFICATION)


def texts() -> dict:
    return {"zh-TW": {"title": "標題", "body": "內容"}, "en": {"title": "Title", "body": "Body"}}


def test_drafts_need_both_languages_an_audience_and_sla_only_for_sla_notices():
    base = {"kind": "service_change", "text": texts(), "affects": {"all": True}, "effective_date": "2026-12-31"}
    service.NoticeDraft.model_validate(base)
    bad = [
        {**base, "text": {"en": texts()["en"]}},
        {**base, "affects": {}},
        {**base, "affects": {"all": True, "plans": ["pro"]}},
        {**base, "kind": "sla"},
        {**base, "sla": {"sla_id": "uptime", "action": "add"}},
        {**base, "publish_at": "2026-12-01T10:00:00"},  # no UTC offset: ambiguous
        {**base, "exemption": {"kind": "because", "justification": JUSTIFICATION}},
    ]
    for body in bad:
        with pytest.raises(pydantic.ValidationError):
            service.NoticeDraft.model_validate(body)


def test_audience_matches_plans_or_features():
    audience = service.Audience(plans=["pro"], features=["live-auction"])
    assert audience.includes({"plan": "pro"})
    assert audience.includes({"plan": "basic", "features": ["live-auction", "x"]})
    assert not audience.includes({"plan": "basic", "features": ["x"]})
    assert not audience.includes({})
    assert service.Audience(all=True).includes({})

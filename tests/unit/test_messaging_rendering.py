"""Email templates: both languages, autoescaped HTML, strict data, one-line subjects."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from orderpally.messaging import delivery, rendering
from orderpally.messaging.requests import EmailRequest


@pytest.mark.parametrize("name", sorted(rendering.known_templates()))
def test_every_template_has_every_part_in_both_languages(name):
    for language in ("zh-TW", "en"):
        for part in rendering.PARTS:
            assert (rendering.TEMPLATES / name / f"{language}.{part}").is_file(), f"{name}/{language}.{part}"


def test_customer_words_are_escaped_in_html_and_kept_in_text():
    data = {"basis": "a", "terminate_at": "2026-12-31", "reason": "<script>alert(1)</script>"}
    rendered = rendering.render("termination_scheduled", "en", data)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text


def test_languages_differ():
    zh = rendering.render("termination_cancelled", "zh-TW", {})
    en = rendering.render("termination_cancelled", "en", {})
    assert zh.subject != en.subject
    assert en.subject.isascii()
    assert not zh.subject.isascii()


def test_unknown_template_and_missing_data_are_refused():
    with pytest.raises(rendering.UnknownTemplate):
        rendering.render("no_such_template", "en", {})
    with pytest.raises(rendering.UnknownTemplate):
        rendering.render("../messaging", "en", {})
    with pytest.raises(rendering.TemplateDataError):
        rendering.render("termination_scheduled", "en", {"basis": "x"})


def test_subject_cannot_carry_a_second_header(tmp_path, monkeypatch):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "en.subject.txt").write_text("Hello {{ name }}")
    (tmp_path / "probe" / "en.body.txt").write_text("x")
    (tmp_path / "probe" / "en.body.html").write_text("x")
    monkeypatch.setattr(rendering, "TEMPLATES", tmp_path)
    rendering._environment.cache_clear()
    try:
        rendered = rendering.render("probe", "en", {"name": "a\r\nBcc: victim@example.com"})
    finally:
        rendering._environment.cache_clear()
    assert "\n" not in rendered.subject
    assert "\r" not in rendered.subject


def test_composed_message_has_both_parts_and_a_message_id_stable_per_key():
    request = EmailRequest(idempotency_key="k-1", template="termination_cancelled", to_email="a@example.com")
    rendered = rendering.render("termination_cancelled", "zh-TW", {})
    now = datetime(2026, 11, 26, tzinfo=UTC)
    first = delivery.compose(request, rendered, "OrderPally <no-reply@orderpally.example>", now)
    again = delivery.compose(request, rendered, "OrderPally <no-reply@orderpally.example>", now)
    other = delivery.compose(
        request.model_copy(update={"idempotency_key": "k-2"}), rendered, "OrderPally <no-reply@orderpally.example>", now
    )
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert first["Message-ID"].endswith("@orderpally.example>")
    parsed = message_from_bytes(first.as_bytes(), policy=policy.default)
    types = [part.get_content_type() for part in parsed.walk()]
    assert types == ["multipart/alternative", "text/plain", "text/html"]
    assert parsed["Content-Language"] == "zh-TW"


@pytest.mark.parametrize(("code", "permanent"), [(550, True), (554, True), (451, False), (421, False)])
def test_relay_refusals_are_classified_by_code(code, permanent):
    assert delivery.RelayRefused(delivery.RelayReply(code, "x")).permanent is permanent

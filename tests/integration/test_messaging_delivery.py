"""The notice-email delivery against the real SMTP sink and the Firestore emulator."""

from __future__ import annotations

import dataclasses
import logging
import smtplib
import threading

import pytest

from orderpally import clients, events
from orderpally.config import settings
from orderpally.messaging import delivery
from orderpally.messaging.requests import EmailRequest
from smtp_sink import read_mailbox


def send(request: EmailRequest) -> str:
    return delivery.deliver(
        clients.firestore_client(),
        request,
        send=delivery.smtp_sender(clients.smtp_connection),
        mail_from=settings().mail_from,
    )


def ledger(request: EmailRequest) -> dict:
    ref = (
        clients.firestore_client()
        .collection(delivery.DELIVERIES)
        .document(delivery.delivery_id(request.idempotency_key))
    )
    return ref.get().to_dict() or {}


def request_for(to: str, key: str = "k-1", **extra) -> EmailRequest:
    return EmailRequest(idempotency_key=key, template="termination_cancelled", to_email=to, **extra)


def test_one_mail_per_key_however_often_it_is_delivered(emulators):
    request = request_for("ann@example.com")
    assert send(request) == delivery.Status.SENT
    assert send(request) == delivery.Status.SENT
    mails = read_mailbox(emulators.mailbox)
    assert len(mails) == 1
    assert mails[0]["To"] == "ann@example.com"
    entry = ledger(request)
    assert entry["status"] == "sent"
    assert entry["smtp_response"].startswith("250")
    assert entry["attempts"] == 1


def test_concurrent_deliveries_send_one_mail(emulators):
    request = request_for("bob@example.com", key="concurrent")
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            outcomes.append(send(request))
        except events.RetryableError:
            outcomes.append("retry")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_mailbox(emulators.mailbox)) == 1
    assert len(outcomes) == 6
    assert "sent" in outcomes


def test_stored_language_preference_wins(emulators):
    clients.firestore_client().document("accounts/acct-en").set({"language": "en", "email": "cy@example.com"})
    send(request_for("cy@example.com", key="lang", account_id="acct-en", language="zh-TW"))
    (mail,) = read_mailbox(emulators.mailbox)
    assert mail["Content-Language"] == "en"
    assert str(mail["Subject"]).isascii()


def test_request_language_applies_without_a_stored_preference(emulators):
    send(request_for("dee@example.com", key="lang-2", language="en"))
    send(request_for("eve@example.com", key="lang-3"))
    languages = sorted(m["Content-Language"] for m in read_mailbox(emulators.mailbox))
    assert languages == ["en", "zh-TW"]


def test_permanent_refusal_is_recorded_and_not_retried(emulators):
    request = request_for("bounce-me@example.com", key="bounce")
    with pytest.raises(events.PermanentError):
        send(request)
    entry = ledger(request)
    assert entry["status"] == "failed_permanently"
    assert entry["smtp_response"].startswith("550")
    # A redelivery does not try again.
    assert send(request) == delivery.Status.FAILED
    assert ledger(request)["attempts"] == 1
    assert read_mailbox(emulators.mailbox) == []


def test_temporary_refusal_asks_for_redelivery_and_counts_attempts(emulators):
    request = request_for("defer-me@example.com", key="defer")
    for attempt in (1, 2):
        with pytest.raises(events.RetryableError):
            send(request)
        entry = ledger(request)
        assert entry["status"] == "retrying"
        assert entry["smtp_response"].startswith("451")
        assert entry["attempts"] == attempt


def test_unreachable_relay_is_retried_then_sent_once_back(emulators):
    request = request_for("fay@example.com", key="down")
    unreachable = delivery.smtp_sender(lambda: smtplib.SMTP("127.0.0.1", 9, timeout=2))
    with pytest.raises(events.RetryableError):
        delivery.deliver(clients.firestore_client(), request, send=unreachable, mail_from=settings().mail_from)
    assert ledger(request)["status"] == "retrying"
    assert send(request) == delivery.Status.SENT
    assert len(read_mailbox(emulators.mailbox)) == 1


def test_a_relay_without_tls_keeps_the_mail_for_retry_and_alerts(emulators, monkeypatch, caplog):
    # The sink offers no STARTTLS: a relay that lost its TLS, or something in the way that strips it.
    request = request_for("gus@example.com", key="no-tls")
    monkeypatch.setattr(clients, "settings", lambda: dataclasses.replace(settings(), smtp_security="starttls"))
    with pytest.raises(events.RetryableError):
        send(request)
    assert ledger(request)["status"] == "retrying"
    assert read_mailbox(emulators.mailbox) == []
    alerts = [getattr(r, "fields", {}).get("alert") for r in caplog.records if r.levelno >= logging.ERROR]
    assert delivery.ALERT_NO_TLS in alerts
    monkeypatch.undo()
    assert send(request) == delivery.Status.SENT
    assert len(read_mailbox(emulators.mailbox)) == 1


def test_unknown_template_is_dropped_not_retried(emulators):
    request = EmailRequest(idempotency_key="unknown", template="no_such_template", to_email="gil@example.com")
    with pytest.raises(events.PermanentError):
        send(request)
    assert ledger(request)["status"] == "dropped"
    assert send(request) == delivery.Status.DROPPED


def test_long_bodies_in_both_languages_reach_the_sink_intact(emulators):
    paragraph = "競標結束時間將延長。" * 300 + "\n" + "Auctions will end later. " * 200
    data = {
        "notice_id": "n",
        "kind": "service_change",
        "version": 1,
        "effective_date": "2026-12-26",
        "text": {"zh-TW": {"title": "調整", "body": paragraph}, "en": {"title": "Change", "body": paragraph}},
        "correction_note": "",
        "notice_url": "http://localhost/notices/page?id=n",
    }
    for language in ("zh-TW", "en"):
        request = EmailRequest(
            idempotency_key=f"long-{language}",
            template="service_notice",
            to_email="long@example.com",
            language=language,
            data=data,
        )
        assert send(request) == delivery.Status.SENT
    for mail in read_mailbox(emulators.mailbox):
        assert paragraph in mail.get_body(("plain",)).get_content()

"""The notice-email delivery, of single requests and of batches, against the real SMTP sink and
the Firestore emulator."""

from __future__ import annotations

import dataclasses
import logging
import smtplib
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from orderpally import clients, events
from orderpally.config import settings
from orderpally.messaging import delivery
from orderpally.messaging import store as mail_store
from orderpally.messaging.requests import EmailBatch, EmailRequest, Recipient
from smtp_sink import read_mailbox


def send(request: EmailRequest) -> str:
    return delivery.deliver(
        clients.firestore_client(),
        request,
        send=delivery.smtp_sender(clients.smtp_connection),
        mail_from=settings().mail_from,
    )


def ledger(request: EmailRequest) -> dict:
    return mail_store.record_of(clients.firestore_client(), request.idempotency_key)


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


# --- Batches: one message, many recipients, one relay connection ---------------------------


def batch_of(n: int, *, prefix: str = "b", **data) -> EmailBatch:
    return EmailBatch(
        template="termination_cancelled",
        data=data,
        recipients=[Recipient(idempotency_key=f"{prefix}-{i}", to_email=f"{prefix}{i}@example.com") for i in range(n)],
    )


class CountingConnect:
    """clients.smtp_connection, counting the connections a delivery opens."""

    def __init__(self) -> None:
        self.opened: list[smtplib.SMTP] = []

    def __call__(self) -> smtplib.SMTP:
        self.opened.append(clients.smtp_connection())
        return self.opened[-1]


def send_batch(batch: EmailBatch, connect=clients.smtp_connection, **options) -> dict[str, int]:
    with delivery.smtp_session(connect) as session:
        return delivery.deliver_batch(
            clients.firestore_client(), batch, send=session, mail_from=settings().mail_from, **options
        )


def recipients_in(mailbox) -> list[str]:
    return sorted(str(m["To"]) for m in read_mailbox(mailbox))


def expected(batch: EmailBatch) -> list[str]:
    return sorted(r.to_email for r in batch.recipients)


def arm_crash_after(mails: int) -> None:
    ref = clients.firestore_client().document(events.fault_document(delivery.BATCH_FAULTS))
    ref.set({"point": f"after-mail:{mails}", "remaining": 1})


def test_a_batch_is_sent_once_over_one_connection_however_often_it_is_delivered(emulators):
    batch = batch_of(12)
    connect = CountingConnect()
    assert send_batch(batch, connect) == {"sent": 12}
    assert len(connect.opened) == 1
    assert send_batch(batch) == {"already_sent": 12}
    assert recipients_in(emulators.mailbox) == expected(batch)
    for request in batch.requests():
        entry = ledger(request)
        assert entry["status"] == "sent"
        assert entry["attempts"] == 1
        assert entry["smtp_response"].startswith("250")
        assert entry["lease_until"] is None


@pytest.mark.parametrize(
    ("size", "crash_after"),
    [(7, 3), (2 * delivery.CLAIM_CHUNK + 7, delivery.CLAIM_CHUNK + 3)],  # the second: one chunk claimed ahead
)
def test_a_batch_crashed_midway_is_finished_by_its_redelivery_with_nobody_mailed_twice(emulators, size, crash_after):
    batch = batch_of(size)
    arm_crash_after(crash_after)
    with pytest.raises(events.FaultInjected):
        send_batch(batch)
    assert len(read_mailbox(emulators.mailbox)) == crash_after
    entries = [ledger(request) for request in batch.requests()]
    # What was sent is settled; nothing is left leased, so the redelivery need not wait.
    assert [e.get("status") for e in entries[:crash_after]] == ["sent"] * crash_after
    assert all(e.get("status") in (None, "retrying") for e in entries[crash_after:])
    assert all(e.get("lease_until") is None for e in entries)
    assert send_batch(batch) == {"already_sent": crash_after, "sent": size - crash_after}
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_a_batch_crashed_inside_a_send_sends_that_mail_after_its_lease_ran_out(emulators):
    batch = batch_of(5)
    real = delivery.smtp_sender(clients.smtp_connection)
    calls = {"n": 0}

    def dies_on_the_third(message):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the instance died while sending")
        return real(message)

    db = clients.firestore_client()
    with pytest.raises(RuntimeError):
        delivery.deliver_batch(db, batch, send=dies_on_the_third, mail_from=settings().mail_from)
    # The mail whose fate is unknown keeps its lease: a redelivery now leaves it alone...
    with pytest.raises(events.RetryableError):
        send_batch(batch)
    assert len(read_mailbox(emulators.mailbox)) == 4
    assert ledger(batch.requests()[2])["status"] == "sending"
    # ...and once the lease ran out, sends it.
    later = datetime.now(UTC) + delivery.LEASE + timedelta(seconds=5)
    assert send_batch(batch, now=lambda: later) == {"already_sent": 4, "sent": 1}
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_concurrent_deliveries_of_one_batch_send_each_mail_once(emulators):
    batch = batch_of(60)
    outcomes: list[object] = []
    sending = threading.Event()

    def deliver() -> None:
        with delivery.smtp_session(clients.smtp_connection) as session:

            def send(message):
                reply = session(message)
                sending.set()
                time.sleep(0.01)  # still sending when the later deliveries arrive
                return reply

            try:
                outcomes.append(
                    delivery.deliver_batch(clients.firestore_client(), batch, send=send, mail_from=settings().mail_from)
                )
            except events.RetryableError:
                outcomes.append("retry")

    # Two at the same moment, two more while the batch is being sent.
    together = [threading.Thread(target=deliver) for _ in range(2)]
    later = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in together:
        thread.start()
    assert sending.wait(timeout=30)
    for thread in later:
        thread.start()
    for thread in together + later:
        thread.join()
    assert len(outcomes) == 4
    # The redelivery of those that found mails held by another sends what is left, if anything.
    final = send_batch(batch)
    assert final.get("already_sent", 0) + final.get("sent", 0) == 60
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_a_batch_skips_a_mail_already_sent_as_a_single_request(emulators):
    batch = batch_of(4, prefix="mix")
    (single, *_) = batch.requests()
    assert send(single) == delivery.Status.SENT
    assert send_batch(batch) == {"already_sent": 1, "sent": 3}
    assert recipients_in(emulators.mailbox) == expected(batch)
    # And the other way round: a single request of a mail the batch sent sends nothing.
    assert send(batch.requests()[3]) == delivery.Status.SENT
    assert len(read_mailbox(emulators.mailbox)) == 4


def test_a_duplicate_recipient_in_a_batch_is_mailed_once(emulators):
    batch = batch_of(3)
    doubled = batch.model_copy(update={"recipients": [*batch.recipients, batch.recipients[0]]})
    assert send_batch(doubled) == {"sent": 3}
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_refused_recipients_are_recorded_and_the_others_still_go(emulators):
    batch = batch_of(4, prefix="ok")
    refused = [
        Recipient(idempotency_key="batch-bounce", to_email="bounce-1@example.com"),
        Recipient(idempotency_key="batch-defer", to_email="defer-1@example.com"),
    ]
    mixed = batch.model_copy(
        update={"recipients": [refused[0], *batch.recipients[:2], refused[1], *batch.recipients[2:]]}
    )
    # The deferred one is left for the redelivery, once the rest is settled.
    with pytest.raises(events.RetryableError):
        send_batch(mixed)
    assert recipients_in(emulators.mailbox) == expected(batch)
    by_key = {r.idempotency_key: ledger(r) for r in mixed.requests()}
    assert by_key["batch-bounce"]["status"] == "failed_permanently"
    assert by_key["batch-bounce"]["smtp_response"].startswith("550")
    assert by_key["batch-defer"]["status"] == "retrying"
    assert by_key["batch-defer"]["smtp_response"].startswith("451")
    with pytest.raises(events.RetryableError):
        send_batch(mixed)
    assert by_key["batch-defer"]["attempts"] + 1 == ledger(mixed.requests()[3])["attempts"]
    assert ledger(mixed.requests()[0])["attempts"] == 1  # never tried again
    assert len(read_mailbox(emulators.mailbox)) == 4


def test_each_recipient_of_a_batch_gets_their_stored_language(emulators):
    db = clients.firestore_client()
    db.document("accounts/batch-en").set({"language": "en", "email": "en@example.com"})
    db.document("accounts/batch-zh").set({"language": "zh-TW", "email": "zh@example.com"})
    batch = EmailBatch(
        template="termination_cancelled",
        recipients=[
            Recipient(idempotency_key="l-1", to_email="en@example.com", account_id="batch-en", language="zh-TW"),
            Recipient(idempotency_key="l-2", to_email="zh@example.com", account_id="batch-zh"),
            Recipient(idempotency_key="l-3", to_email="none@example.com", account_id="gone", language="en"),
        ],
    )
    send_batch(batch)
    languages = {str(m["To"]): m["Content-Language"] for m in read_mailbox(emulators.mailbox)}
    assert languages == {"en@example.com": "en", "zh@example.com": "zh-TW", "none@example.com": "en"}


def test_a_batch_out_of_time_leaves_the_rest_to_its_redelivery(emulators):
    batch = batch_of(6)
    ticks = iter(range(1000))
    # Each look at the clock is one second later: the 3-second budget ends during the batch.
    with pytest.raises(events.RetryableError):
        send_batch(batch, clock=lambda: float(next(ticks)), time_budget_seconds=3.0)
    sent = len(read_mailbox(emulators.mailbox))
    assert 0 < sent < 6
    assert all(ledger(r).get("lease_until") is None for r in batch.requests())
    assert send_batch(batch) == {"already_sent": sent, "sent": 6 - sent}
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_an_unreachable_relay_stops_the_batch_and_its_redelivery_sends_it_all(emulators):
    batch = batch_of(5)
    with pytest.raises(events.RetryableError):
        send_batch(batch, lambda: smtplib.SMTP("127.0.0.1", 9, timeout=2))
    statuses = {ledger(r)["status"] for r in batch.requests()}
    assert statuses == {"retrying"}
    assert send_batch(batch) == {"sent": 5}
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_a_connection_the_relay_ended_between_mails_is_opened_again(emulators):
    batch = batch_of(4)
    connect = CountingConnect()
    real = connect.__call__
    sent = {"n": 0}

    def ends_after_two() -> smtplib.SMTP:
        conn = real()
        original = conn.data

        def data(message):
            reply = original(message)
            sent["n"] += 1
            if sent["n"] == 2:
                conn.close()  # as a relay that takes two messages per connection
            return reply

        conn.data = data
        return conn

    assert send_batch(batch, ends_after_two) == {"sent": 4}
    assert len(connect.opened) == 2
    assert recipients_in(emulators.mailbox) == expected(batch)


def test_a_batch_with_data_its_template_cannot_render_is_dropped(emulators):
    batch = EmailBatch(
        template="termination_scheduled",
        data={"basis": "x"},
        recipients=[Recipient(idempotency_key="drop-1", to_email="d@example.com")],
    )
    assert send_batch(batch) == {"dropped": 1}
    assert ledger(batch.requests()[0])["status"] == "dropped"
    assert read_mailbox(emulators.mailbox) == []

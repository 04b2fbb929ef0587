"""Mail batches: their shape and size limits, how a fan-out splits a page, and how one relay
connection carries many messages (a scripted relay, no network)."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pydantic
import pytest

import local_stack
from orderpally import events
from orderpally.messaging import delivery, rendering
from orderpally.messaging.requests import MAX_RECIPIENTS, EmailBatch, EmailRequest, MailRequest, Recipient
from orderpally.notices import fanout

PUBSUB_MESSAGE_LIMIT = 10 * 1000 * 1000
FIRESTORE_WRITES_PER_COMMIT = 500


def recipients(n: int) -> list[Recipient]:
    return [Recipient(idempotency_key=f"k-{i}", to_email=f"r{i}@example.com") for i in range(n)]


def test_the_topic_carries_single_requests_and_batches_and_tells_them_apart():
    single = MailRequest.model_validate({"idempotency_key": "k", "template": "t", "to_email": "a@example.com"})
    batch = MailRequest.model_validate(
        {"template": "t", "data": {"x": 1}, "recipients": [{"idempotency_key": "k", "to_email": "a@example.com"}]}
    )
    assert isinstance(single.root, EmailRequest)
    assert isinstance(batch.root, EmailBatch)
    with pytest.raises(pydantic.ValidationError):  # both at once is neither
        MailRequest.model_validate(
            {
                "idempotency_key": "k",
                "template": "t",
                "to_email": "a@example.com",
                "recipients": [{"idempotency_key": "k", "to_email": "a@example.com"}],
            }
        )


@pytest.mark.parametrize("count", [0, MAX_RECIPIENTS + 1])
def test_a_batch_holds_one_to_max_recipients(count):
    with pytest.raises(pydantic.ValidationError):
        EmailBatch(template="t", recipients=recipients(count))


def test_a_batch_is_one_request_per_recipient_with_the_shared_template_and_data():
    batch = EmailBatch(
        template="service_notice",
        data={"notice_id": "n"},
        recipients=[*recipients(2), Recipient(idempotency_key="e", to_email="e@example.com", language="en")],
    )
    requests = batch.requests()
    assert [r.idempotency_key for r in requests] == ["k-0", "k-1", "e"]
    assert [r.to_email for r in requests] == ["r0@example.com", "r1@example.com", "e@example.com"]
    assert all(r.template == "service_notice" and r.data == {"notice_id": "n"} for r in requests)
    assert requests[2].language == "en"


def test_the_largest_batch_of_the_largest_notice_fits_one_pubsub_message():
    body = "競" * 20000  # the longest body a notice may have, in its widest characters
    text = {language: {"title": "標" * 200, "body": body} for language in ("zh-TW", "en")}
    notice = {"kind": "service_change"}
    version = {"version": 9999, "effective_date": "2027-01-01", "text": text, "correction_note": "更" * 2000}
    data = fanout.notice_data("n" * 40, notice, version, "https://api.orderpally.tw/notices/page")
    widest = [
        Recipient(
            idempotency_key=f"{i:04d}" + "k" * 296,
            to_email=f"{'a' * 60}{i:04d}@{'d' * 60}.example.com",
            account_id="a" * 128,
            language="zh-TW",
        )
        for i in range(MAX_RECIPIENTS)
    ]
    batch = EmailBatch(template=fanout.TEMPLATE, data=data, recipients=widest)
    size = len(events.envelope("notice_email.requested", batch.model_dump(mode="json")))
    assert size < PUBSUB_MESSAGE_LIMIT / 5


@pytest.mark.parametrize(("count", "sizes"), [(0, []), (1, [1]), (100, [100]), (250, [100, 100, 50])])
def test_a_page_goes_out_in_batches_of_at_most_batch_size(count, sizes):
    batches = fanout.batches_of(recipients(count), {"x": 1}, 100)
    assert [len(b.recipients) for b in batches] == sizes
    assert [r.idempotency_key for b in batches for r in b.recipients] == [f"k-{i}" for i in range(count)]


def test_batch_and_ledger_sizes_stay_within_the_limits_they_depend_on():
    assert fanout.BATCH_SIZE <= MAX_RECIPIENTS <= FIRESTORE_WRITES_PER_COMMIT
    assert delivery.CLAIM_CHUNK <= FIRESTORE_WRITES_PER_COMMIT
    assert delivery.MAX_UNSETTLED <= FIRESTORE_WRITES_PER_COMMIT
    mail = next(e for e in local_stack.load_catalogue() if e.entry_point == "send_notice_email")
    # Time left after the budget for the mail in flight and the last commits.
    assert mail.timeout_seconds * 0.75 >= delivery.TIME_BUDGET_SECONDS


@pytest.mark.parametrize("to", ["a@example.com", f"{'long' * 30}@{'sub' * 20}.example.com"])
def test_a_mail_serialised_once_per_batch_is_the_mail_compose_makes(to):
    request = EmailRequest(idempotency_key="k-1", template="termination_cancelled", to_email=to)
    rendered = rendering.render("termination_cancelled", "zh-TW", {})
    mail_from, now = "OrderPally <no-reply@orderpally.example>", datetime(2026, 11, 26, tzinfo=UTC)
    composed = delivery.compose(request, rendered, mail_from, now)
    outgoing = delivery._Prepared(rendered, mail_from).to(request, now)
    assert (outgoing.sender, outgoing.recipient) == ("no-reply@orderpally.example", to)
    assert b"\r\n" in outgoing.data
    assert b"\n" not in outgoing.data.replace(b"\r\n", b"")  # CRLF line ends only
    assert all(len(line) <= 998 for line in outgoing.data.split(b"\r\n"))
    prepared = message_from_bytes(outgoing.data, policy=policy.default)
    expected = message_from_bytes(composed.as_bytes(policy=policy.SMTP), policy=policy.default)
    assert sorted(prepared.keys()) == sorted(expected.keys())
    for name in expected:
        assert str(prepared[name]) == str(expected[name]) or name == "Content-Type", name
    assert prepared.get_content_type() == expected.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        assert prepared.get_body((kind,)).get_content() == expected.get_body((kind,)).get_content()


class ScriptedRelay:
    """An SMTP connection that answers as told: replies[command] is a list of (code, text) to
    give in turn (then 250), or an exception to raise."""

    def __init__(self, log: list[str], **replies) -> None:
        self.log = log
        self.replies = {command: list(answers) for command, answers in replies.items()}

    def _answer(self, command: str) -> tuple[int, bytes]:
        self.log.append(command)
        answers = self.replies.get(command) or []
        answer = answers.pop(0) if answers else (250, "OK")
        if isinstance(answer, Exception):
            raise answer
        return answer[0], answer[1].encode()

    def ehlo_or_helo_if_needed(self) -> None:
        self.log.append("ehlo")

    def mail(self, sender: str) -> tuple[int, bytes]:
        return self._answer("mail")

    def rcpt(self, recipient: str) -> tuple[int, bytes]:
        return self._answer("rcpt")

    def data(self, message: bytes) -> tuple[int, bytes]:
        return self._answer("data")

    def rset(self) -> tuple[int, bytes]:
        return self._answer("rset")

    def quit(self) -> None:
        self.log.append("quit")

    def close(self) -> None:
        self.log.append("close")


def message(n: int = 0) -> delivery.Outgoing:
    request = EmailRequest(idempotency_key=f"k-{n}", template="termination_cancelled", to_email=f"r{n}@example.com")
    rendered = rendering.render("termination_cancelled", "en", {})
    composed = delivery.compose(request, rendered, "OrderPally <no-reply@orderpally.example>", datetime.now(UTC))
    return delivery.Outgoing.of(composed)


def session_over(*relays: ScriptedRelay):
    queue = list(relays)
    return delivery.smtp_session(lambda: queue.pop(0))


def test_one_connection_carries_every_message_and_is_quit_at_the_end():
    log: list[str] = []
    with session_over(ScriptedRelay(log)) as send:
        for n in range(3):
            assert send(message(n)).code == 250
    assert log == ["ehlo", *["mail", "rcpt", "data"] * 3, "quit", "close"]


def test_a_refused_recipient_resets_the_transaction_and_the_next_message_goes_on():
    log: list[str] = []
    with session_over(ScriptedRelay(log, rcpt=[(550, "no such mailbox")])) as send:
        with pytest.raises(delivery.RelayRefused) as refused:
            send(message(0))
        assert refused.value.permanent
        assert send(message(1)).code == 250
    assert log == ["ehlo", "mail", "rcpt", "rset", "mail", "rcpt", "data", "quit", "close"]


@pytest.mark.parametrize("ended", [(421, "closing"), smtplib.SMTPServerDisconnected("gone")])
def test_a_kept_connection_the_relay_ended_is_replaced_before_anything_is_sent(ended):
    first: list[str] = []
    second: list[str] = []
    with session_over(ScriptedRelay(first, mail=[(250, "OK"), ended]), ScriptedRelay(second)) as send:
        send(message(0))
        assert send(message(1)).code == 250
    assert first == ["ehlo", "mail", "rcpt", "data", "mail", "close"]
    assert second == ["ehlo", "mail", "rcpt", "data", "quit", "close"]


def test_a_fresh_connection_refusing_mail_is_not_tried_again():
    log: list[str] = []
    with session_over(ScriptedRelay(log, mail=[(421, "busy")])) as send, pytest.raises(delivery.RelayRefused):
        send(message())
    assert log.count("mail") == 1


def test_a_connection_lost_during_data_is_not_sent_again_on_another():
    # The relay may have taken the message: the ledger's redelivery decides, not the session.
    first: list[str] = []
    second: list[str] = []
    lost = ScriptedRelay(first, data=[(250, "OK"), smtplib.SMTPServerDisconnected("gone")])
    with session_over(lost, ScriptedRelay(second)) as send:
        send(message(0))
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(message(1))
        send(message(2))
    assert first.count("data") == 2
    assert second == ["ehlo", "mail", "rcpt", "data", "quit", "close"]

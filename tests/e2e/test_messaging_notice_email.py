"""The notice-email function behind its real push subscription."""

from __future__ import annotations

import base64
import time

import pytest

from orderpally import clients, events
from orderpally.messaging import delivery
from orderpally.messaging import requests as mail_requests
from orderpally.messaging import store as mail_store
from orderpally.messaging.requests import EmailBatch, EmailRequest, Recipient
from smtp_sink import read_mailbox
from support import pubsub
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def settled(key: str) -> str | None:
    status = mail_store.record_of(clients.firestore_client(), key).get("status")
    return status if status in delivery.FINAL else None


def test_published_requests_arrive_once_in_the_recipients_language(running_stack):
    clients.firestore_client().document("accounts/acct-e2e").set({"language": "en", "email": "hal@example.com"})
    request = EmailRequest(
        idempotency_key="e2e-1", template="termination_cancelled", to_email="hal@example.com", account_id="acct-e2e"
    )
    for _ in range(3):  # duplicate publishes of one request
        pubsub.request_email(request)
    pubsub.request_email(
        request.model_copy(update={"idempotency_key": "e2e-2", "to_email": "ivy@example.com", "account_id": None})
    )
    wait_for(lambda: settled("e2e-1") and settled("e2e-2"))
    time.sleep(1.0)  # let any duplicate that would wrongly be sent arrive
    mails = read_mailbox(running_stack.mailbox)
    assert sorted(str(m["To"]) for m in mails) == ["hal@example.com", "ivy@example.com"]
    by_to = {str(m["To"]): m for m in mails}
    assert by_to["hal@example.com"]["Content-Language"] == "en"
    assert by_to["ivy@example.com"]["Content-Language"] == "zh-TW"


def test_a_published_batch_reaches_each_recipient_once_in_their_language(running_stack):
    clients.firestore_client().document("accounts/acct-batch").set({"language": "en", "email": "jo@example.com"})
    batch = EmailBatch(
        template="termination_cancelled",
        recipients=[
            Recipient(idempotency_key="e2e-b-1", to_email="jo@example.com", account_id="acct-batch"),
            Recipient(idempotency_key="e2e-b-2", to_email="kim@example.com"),
            Recipient(idempotency_key="e2e-b-3", to_email="bounce-batch@example.com"),
        ],
    )
    for _ in range(2):  # a duplicate publish, as a redrive under a new message id would make
        pubsub.publisher().publish(mail_requests.TOPIC, mail_requests.MESSAGE_TYPE, batch.model_dump(mode="json"))
    wait_for(lambda: all(settled(r.idempotency_key) for r in batch.recipients))
    time.sleep(1.0)  # let any duplicate that would wrongly be sent arrive
    mails = {str(m["To"]): m for m in read_mailbox(running_stack.mailbox)}
    assert len(read_mailbox(running_stack.mailbox)) == 2
    assert mails["jo@example.com"]["Content-Language"] == "en"
    assert mails["kim@example.com"]["Content-Language"] == "zh-TW"
    assert settled("e2e-b-3") == delivery.Status.FAILED


def test_malformed_and_permanently_failing_requests_are_recorded_not_retried(running_stack):
    publisher = clients.publisher()
    topic = events.topic_path("notice-email")
    message_id = publisher.publish(topic, b"not json").result(timeout=30)
    pubsub.request_email(
        EmailRequest(idempotency_key="e2e-bounce", template="termination_cancelled", to_email="bounce@example.com")
    )

    def ledger_status() -> str | None:
        safe = base64.urlsafe_b64encode(f"send_notice_email:{message_id}".encode()).decode().rstrip("=")
        entry = clients.firestore_client().collection(events.LEDGER_COLLECTION).document(safe).get().to_dict()
        return (entry or {}).get("status")

    assert wait_for(ledger_status) == events.Outcome.MALFORMED
    assert wait_for(lambda: settled("e2e-bounce")) == delivery.Status.FAILED
    assert read_mailbox(running_stack.mailbox) == []

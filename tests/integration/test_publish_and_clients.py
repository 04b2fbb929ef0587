"""The publish helper, audit writer, Storage and SMTP clients against real emulators."""

from __future__ import annotations

import json
import uuid
from email.message import EmailMessage

import pytest

from orderpally import audit, clients, events
from orderpally.config import settings
from smtp_sink import read_mailbox
from support import pubsub

pytestmark = pytest.mark.usefixtures("emulators")


def test_publish_sends_a_versioned_json_envelope():
    from google.cloud import pubsub_v1

    topic = f"it-{uuid.uuid4().hex[:8]}"
    publisher = clients.publisher()
    subscriber = pubsub_v1.SubscriberClient()
    publisher.create_topic(name=events.topic_path(topic))
    subscription = subscriber.subscription_path(settings().project_id, f"{topic}-pull")
    subscriber.create_subscription(name=subscription, topic=events.topic_path(topic))

    message_id = pubsub.publisher().publish(topic, "thing.happened", {"n": 1}, schema_version=2)

    response = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
    [received] = response.received_messages
    assert received.message.message_id == message_id
    assert received.message.attributes["type"] == "thing.happened"
    body = json.loads(received.message.data)
    assert body["schema_version"] == 2
    assert body["type"] == "thing.happened"
    assert body["data"] == {"n": 1}
    assert body["published_at"]


def test_audit_trail_is_append_only_and_newest_first():
    audit.record(
        clients.firestore_client(),
        "acct-1",
        audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", "acct-1"), "192.0.2.1"),
    )
    audit.record(clients.firestore_client(), "acct-1", audit.AuditEvent("session.revoked", audit.SYSTEM))
    audit.record(
        clients.firestore_client(), "acct-2", audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", "acct-2"))
    )
    entries = audit.entries(clients.firestore_client(), "acct-1")
    assert [(e["id"], e["action"]) for e in entries] == [
        (audit.entry_id(2), "session.revoked"),
        (audit.entry_id(1), "sign_in.succeeded"),
    ]
    assert entries[1]["client_address"] == "192.0.2.1"
    assert entries[0]["at"] >= entries[1]["at"]
    # create() refuses to overwrite: the writer can only append.
    from google.api_core.exceptions import Conflict

    with pytest.raises(Conflict):
        audit.trail(clients.firestore_client(), "acct-1").document(audit.entry_id(1)).create({"action": "forged"})


def test_storage_client_reaches_the_emulator_buckets():
    bucket = clients.storage_client().bucket(settings().exports_bucket)
    bucket.blob("probe/hello.txt").upload_from_string("hi", content_type="text/plain")
    assert bucket.blob("probe/hello.txt").download_as_text() == "hi"


def test_smtp_connection_delivers_to_the_sink(emulators):
    message = EmailMessage()
    message["From"] = settings().mail_from
    message["To"] = "someone@example.test"
    message["Subject"] = "測試 test"
    message.set_content("hello")
    with clients.smtp_connection() as conn:
        conn.send_message(message)
    [received] = read_mailbox(emulators.mailbox)
    assert received["Subject"] == "測試 test"
    assert received["To"] == "someone@example.test"

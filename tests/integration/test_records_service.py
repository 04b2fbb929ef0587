"""The records use cases called directly, against the emulators: no HTTP in between."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as gexc
from google.auth import crypt
from google.cloud import pubsub_v1
from google.oauth2 import service_account

from orderpally import accounts, audit, clients, events, web
from orderpally.archives import store as archive_store
from orderpally.config import settings
from orderpally.records import service
from support import pubsub

pytestmark = pytest.mark.usefixtures("emulators")
WANTED = service.RecordsRange.model_validate({"from": "2020-01-01", "to": "2022-12-31"})
ADDRESS = "203.0.113.9"


def ask(account_id: str, now: datetime) -> dict:
    return service.request(
        clients.firestore_client(),
        pubsub.publisher(),
        account_id,
        WANTED,
        client_address=ADDRESS,
        now=now,
        valid_days=7,
    )


def actions(account_id: str) -> list[dict]:
    """The account's trail, oldest first."""
    return list(reversed(audit.entries(clients.firestore_client(), account_id, 100)))


@pytest.fixture
def build_requests():
    """A subscription to the records topic: what the request asked the builder to do."""
    publisher = clients.publisher()
    topic = events.topic_path(service.TOPIC)
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    name = subscriber.subscription_path(settings().project_id, "records-service-test")
    with contextlib.suppress(gexc.NotFound):
        subscriber.delete_subscription(subscription=name)
    subscriber.create_subscription(name=name, topic=topic)

    def received() -> list[dict]:
        response = subscriber.pull(subscription=name, max_messages=10, timeout=10)
        if response.received_messages:
            subscriber.acknowledge(subscription=name, ack_ids=[m.ack_id for m in response.received_messages])
        return [json.loads(m.message.data) for m in response.received_messages]

    yield received
    subscriber.delete_subscription(subscription=name)


@pytest.fixture
def signing():
    """Signing credentials of a key made here, and the storage emulator as the URL's host."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signer = crypt.RSASigner.from_string(pem.decode())
    credentials = service_account.Credentials(signer, "records-test@example.iam.gserviceaccount.com", "http://unused")
    return credentials, clients.storage_download_endpoint()


def bucket():
    return clients.storage_client().bucket(settings().exports_bucket)


def test_a_request_within_the_limits_is_queued_audited_counted_and_sent_to_the_builder(build_requests):
    now = datetime.now(UTC)
    record = ask("alice", now)

    db = clients.firestore_client()
    stored = service.load(db, record["request_id"])
    assert stored is not None
    assert stored["status"] == "queued"
    assert stored["account_id"] == "alice"
    assert (stored["from"], stored["to"]) == ("2020-01-01", "2022-12-31")
    assert stored["expires_at"] == now + timedelta(days=7)
    quota = db.collection(archive_store.QUOTAS).document("alice").get().to_dict()
    assert quota["records"]["count"] == 1
    assert quota["records"]["active_id"] == record["request_id"]
    requested = [e for e in actions("alice") if e["action"] == "records.requested"]
    assert [e["details"]["request_id"] for e in requested] == [record["request_id"]]
    assert requested[0]["client_address"] == ADDRESS
    published = build_requests()
    assert [m["data"] for m in published] == [{"request_id": record["request_id"], "account_id": "alice"}]
    assert published[0]["type"] == service.MESSAGE_TYPE


def test_a_second_request_while_one_is_in_progress_is_refused_and_writes_nothing(build_requests):
    now = datetime.now(UTC)
    first = ask("bob", now)
    with pytest.raises(web.Problem) as refused:
        ask("bob", now + timedelta(minutes=1))
    href = f"/account/records-requests/{first['request_id']}"
    assert refused.value.status == 409
    assert refused.value.slug == "archive-in-progress"
    assert refused.value.headers == {"Location": href}
    assert refused.value.extra == {"in_progress": first["request_id"], "href": href}

    db = clients.firestore_client()
    assert [s.id for s in db.collection(service.RECORDS).stream()] == [first["request_id"]]
    assert db.collection(archive_store.QUOTAS).document("bob").get().to_dict()["records"]["count"] == 1
    assert [e["action"] for e in actions("bob")] == ["records.requested"]
    assert len(build_requests()) == 1


def test_the_build_archives_the_accounts_records_once(build_requests):
    now = datetime.now(UTC)
    earlier = now - timedelta(minutes=1)
    accounts.create(clients.firestore_client(), "carol", {"email": "carol@example.com", "status": "active"})
    audit.record(
        clients.firestore_client(),
        "carol",
        audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", "carol"), ADDRESS),
        earlier,
    )
    audit.record(
        clients.firestore_client(),
        "dave",
        audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", "dave"), ADDRESS),
        earlier,
    )
    days = {"from": (now - timedelta(days=1)).date().isoformat(), "to": (now + timedelta(days=1)).date().isoformat()}
    wide = service.RecordsRange.model_validate(days)
    db = clients.firestore_client()
    record = service.request(db, pubsub.publisher(), "carol", wide, client_address=ADDRESS, now=now, valid_days=7)
    message = service.RecordsMessage(request_id=record["request_id"], account_id="carol")
    sent: list = []

    assert service.build(db, bucket(), message, sent.append, now) == "ready"
    [ready] = sent
    assert (ready.template, ready.to_email) == ("records_ready", "carol@example.com")
    assert ready.idempotency_key == f"records_ready:{record['request_id']}"
    built = service.load(db, record["request_id"])
    assert built["status"] == "ready"
    assert built["object"] == f"carol/records/{record['request_id']}.zip"
    content = bucket().blob(built["object"]).download_as_bytes()
    assert built["size"] == len(content)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        rows = [json.loads(line) for line in archive.read("records.jsonl").decode().splitlines()]
    assert [row["what"] for row in rows] == ["sign_in.succeeded", "records.requested"]
    assert all(row["actor"] == "customer:carol" for row in rows)
    assert built["counts"] == {"rows": 2}
    # A redelivery finds it built, and builds nothing again; its mail goes under the same key.
    assert service.build(db, bucket(), message, sent.append, now) == "duplicate"
    assert [mail.idempotency_key for mail in sent] == [ready.idempotency_key] * 2
    assert service.run(db, bucket(), service.RecordsMessage(request_id="x" * 24, account_id="carol"), now) == "unknown"


def test_the_download_link_is_recorded_in_the_trail_before_it_is_handed_out(build_requests, signing):
    now = datetime.now(UTC)
    db = clients.firestore_client()
    record = ask("erin", now)
    queued = service.owned(db, "erin", record["request_id"])
    with pytest.raises(web.Problem) as not_ready:
        service.download(db, bucket(), signing, queued, client_address=ADDRESS, now=now)
    assert (not_ready.value.status, not_ready.value.slug) == (409, "records-not-ready")
    assert "records.downloaded" not in [e["action"] for e in actions("erin")]

    built = service.RecordsMessage(request_id=record["request_id"], account_id="erin")
    service.build(db, bucket(), built, lambda mail: None, now)
    ready = service.owned(db, "erin", record["request_id"])
    link = service.download(db, bucket(), signing, ready, client_address=ADDRESS, now=now)
    assert f"erin/records/{record['request_id']}.zip" in link["url"]
    assert "X-Goog-Signature=" in link["url"]
    assert link["expires_at"] == now.replace(microsecond=0) + timedelta(seconds=300)
    downloaded = [e for e in actions("erin") if e["action"] == "records.downloaded"]
    assert [e["details"] for e in downloaded] == [{"request_id": record["request_id"]}]
    assert downloaded[0]["client_address"] == ADDRESS

    with pytest.raises(web.Problem) as expired:
        service.download(db, bucket(), signing, ready, client_address=ADDRESS, now=now + timedelta(days=8))
    assert (expired.value.status, expired.value.slug) == (410, "records-expired")
    # Another customer's request is not found, as if there were none.
    with pytest.raises(web.Problem) as foreign:
        service.owned(db, "frank", record["request_id"])
    assert (foreign.value.status, foreign.value.slug) == (404, "records-request-not-found")

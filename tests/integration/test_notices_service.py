"""Notices on the Firestore emulator, and the fan-out publishing to the Pub/Sub emulator."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from orderpally import clients, events, web
from orderpally.config import settings
from orderpally.messaging.requests import TOPIC as EMAIL_TOPIC
from orderpally.messaging.requests import EmailBatch, MailRequest
from orderpally.notices import fanout, service, store
from support import pubsub

pytestmark = pytest.mark.usefixtures("emulators")
NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def draft(**overrides) -> service.NoticeDraft:
    body = {
        "kind": "service_change",
        "text": {"zh-TW": {"title": "調整", "body": "內容"}, "en": {"title": "Change", "body": "Body"}},
        "affects": {"all": True},
        "effective_date": "2026-04-10",
        **overrides,
    }
    return service.NoticeDraft.model_validate(body)


def correction(effective: str, **overrides) -> service.CorrectionDraft:
    body = {
        "text": {
            "zh-TW": {"title": "調整更正", "body": "更正"},
            "en": {"title": "Change (fixed)", "body": "Fixed"},
        },
        "effective_date": effective,
        "correction_note": "The date was wrong.",
        **overrides,
    }
    return service.CorrectionDraft.model_validate(body)


def test_versions_are_kept_and_only_published_ones_are_public():
    db = clients.firestore_client()
    notice = service.create_notice(db, draft(), "staff-1", NOW)
    later = NOW + timedelta(days=2)
    service.correct_notice(db, notice["id"], correction("2026-05-01"), "staff-1", later)
    future = service.create_notice(
        db, draft(publish_at=(NOW + timedelta(days=5)).isoformat(), effective_date="2026-05-01"), "staff-1", NOW
    )

    listed = service.published_notices(db, later, kind=None, limit=10, before=None)
    assert [notice_id for notice_id, _ in listed] == [notice["id"]]
    versions = service.visible_versions(db, notice["id"], later)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["effective_date"] == "2026-04-10"
    assert versions[0]["text"]["en"]["title"] == "Change"
    assert versions[1]["correction_note"] == "The date was wrong."
    # Before the correction was published, only version 1 is visible.
    assert [v["version"] for v in service.visible_versions(db, notice["id"], NOW)] == [1]
    assert (
        service.published_notices(db, NOW + timedelta(days=6), kind=None, limit=10, before=None)[0][0] == future["id"]
    )


def test_refused_notices_write_nothing():
    db = clients.firestore_client()
    with pytest.raises(web.Problem):
        service.create_notice(db, draft(effective_date="2026-04-09"), "staff-1", NOW)
    notice = service.create_notice(db, draft(), "staff-1", NOW)
    with pytest.raises(web.Problem):
        service.correct_notice(db, notice["id"], correction("2026-04-01"), "staff-1", NOW + timedelta(days=1))
    assert len(db.collection(store.NOTICES).get()) == 1
    assert [v["version"] for v in service.visible_versions(db, notice["id"], NOW + timedelta(days=9))] == [1]
    assert len(db.collection(store.FANOUTS).get()) == 1


def test_sla_notices_follow_the_sla_state():
    db = clients.firestore_client()
    sla = {"sla_id": "uptime", "action": "change"}
    with pytest.raises(web.Problem):
        service.create_notice(db, draft(kind="sla", sla=sla), "staff-1", NOW)
    service.create_notice(db, draft(kind="sla", sla={**sla, "action": "add"}), "staff-1", NOW)
    with pytest.raises(web.Problem):
        service.create_notice(db, draft(kind="sla", sla={**sla, "action": "add"}), "staff-1", NOW)
    service.create_notice(db, draft(kind="sla", sla={**sla, "action": "suspend"}), "staff-1", NOW + timedelta(hours=1))
    with pytest.raises(web.Problem):
        service.create_notice(db, draft(kind="sla", sla=sla), "staff-1", NOW + timedelta(hours=2))
    history = service.sla_history(db, "uptime", NOW + timedelta(days=1))
    assert [n["sla"]["action"] for _, n in history] == ["add", "suspend"]
    assert len(service.published_notices(db, NOW + timedelta(days=1), kind="sla", limit=10, before=None)) == 2
    assert service.published_notices(db, NOW + timedelta(days=1), kind="service_change", limit=10, before=None) == []


def test_listing_pages_without_gaps_or_repeats():
    db = clients.firestore_client()
    created = {service.create_notice(db, draft(), "s", NOW + timedelta(minutes=i))["id"] for i in range(7)}
    seen: list[str] = []
    before = None
    while True:
        page = service.published_notices(db, NOW + timedelta(days=1), kind=None, limit=3, before=before)
        if not page:
            break
        seen += [notice_id for notice_id, _ in page]
        last_id, last = page[-1]
        before = (last["first_published_at"], last_id)
    assert len(seen) == 7
    assert set(seen) == created


@pytest.fixture
def email_subscription():
    publisher = clients.publisher()
    topic = events.topic_path(EMAIL_TOPIC)
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    name = subscriber.subscription_path(settings().project_id, "fanout-test")
    with contextlib.suppress(gexc.NotFound):
        subscriber.delete_subscription(subscription=name)
    subscriber.create_subscription(name=name, topic=topic)
    yield subscriber, name
    subscriber.delete_subscription(subscription=name)


def drain(subscriber, name: str) -> list[EmailBatch]:
    received = []
    while True:
        response = subscriber.pull(subscription=name, max_messages=500, timeout=5)
        if not response.received_messages:
            return received
        for message in response.received_messages:
            mail = MailRequest.model_validate(json.loads(message.message.data)["data"]).root
            assert isinstance(mail, EmailBatch)
            received.append(mail)
        subscriber.acknowledge(subscription=name, ack_ids=[m.ack_id for m in response.received_messages])


def real_publish(batches) -> None:
    futures = [
        pubsub.publisher().publish_async(EMAIL_TOPIC, "notice_email.requested", b.model_dump(mode="json"))
        for b in batches
    ]
    for future in futures:
        future.result(timeout=30)


def test_fanout_survives_a_crash_midway_and_mails_each_affected_customer_once(email_subscription):
    subscriber, name = email_subscription
    db = clients.firestore_client()
    batch = db.batch()
    expected = set()
    for i in range(23):
        plan = "pro" if i % 2 else "basic"
        status = "terminated" if i == 5 else "active"
        batch.set(db.document(f"accounts/a{i:03d}"), {"email": f"a{i}@example.com", "plan": plan, "status": status})
        if plan == "pro" and status != "terminated":
            expected.add(f"a{i:03d}")
    batch.commit()
    notice = service.create_notice(db, draft(affects={"plans": ["pro"]}), "staff-1", NOW)
    job_id = service.fanout_id(notice["id"], 1)

    calls = {"n": 0}

    def crash_on_third_page(batches) -> None:
        calls["n"] += 1
        real_publish(batches)
        if calls["n"] == 3:
            raise RuntimeError("crash after publishing, before saving the cursor")

    def ports(publish) -> fanout.Ports:
        return fanout.Ports(
            db=db, publish_emails=publish, continue_later=lambda _: None, notices_url="u", page_size=5, batch_size=2
        )

    with pytest.raises(RuntimeError):
        fanout.run(ports(crash_on_third_page), job_id, lambda: NOW + timedelta(minutes=1))
    # The crashed run's lease must lapse before a redelivery can take over.
    assert fanout.run(ports(real_publish), job_id, lambda: NOW + timedelta(minutes=30)) == "done"
    assert fanout.run(ports(real_publish), job_id, lambda: NOW + timedelta(minutes=31)) == "already-done"

    batches = drain(subscriber, name)
    # A page's affected customers go in batches of at most batch_size, the notice once in each.
    assert all(1 <= len(b.recipients) <= 2 for b in batches)
    assert all(b.template == "service_notice" and b.data["notice_id"] == notice["id"] for b in batches)
    requests = [r for b in batches for r in b.requests()]
    keys = [r.idempotency_key for r in requests]
    assert {r.account_id for r in requests} == expected
    # At most the crashed page is repeated, with the same keys: the email ledger sends it once.
    assert len(keys) - len(set(keys)) <= 5
    assert all(k == f"notice:{notice['id']}:v1:{r.account_id}" for k, r in zip(keys, requests, strict=True))
    job = db.collection(store.FANOUTS).document(job_id).get().to_dict()
    assert job["status"] == "done"


def test_a_running_mailing_is_not_run_twice_at_once():
    db = clients.firestore_client()
    notice = service.create_notice(db, draft(), "staff-1", NOW)
    job_id = service.fanout_id(notice["id"], 1)
    db.collection(store.FANOUTS).document(job_id).update(
        {"status": "running", "lease_until": NOW + timedelta(minutes=5)}
    )
    ports = fanout.Ports(db=db, publish_emails=lambda _: None, continue_later=lambda _: None, notices_url="u")
    with pytest.raises(events.RetryableError):
        fanout.run(ports, job_id, lambda: NOW + timedelta(minutes=1))


def test_release_hands_out_due_and_stalled_mailings_once():
    db = clients.firestore_client()
    due = service.create_notice(db, draft(), "staff-1", NOW)
    service.create_notice(
        db, draft(publish_at=(NOW + timedelta(days=1)).isoformat(), effective_date="2026-05-01"), "s", NOW
    )
    released: list[str] = []
    assert fanout.release_due(db, released.append, NOW + timedelta(minutes=1)) == 1
    assert released == [service.fanout_id(due["id"], 1)]
    assert fanout.release_due(db, released.append, NOW + timedelta(minutes=2)) == 0
    # Nobody picked it up for a long time: hand it out again.
    assert fanout.release_due(db, released.append, NOW + timedelta(hours=1)) == 1
    assert date.fromisoformat(due["effective_date"]) == date(2026, 4, 10)

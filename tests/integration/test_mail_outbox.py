"""The mail outbox against the Firestore emulator: staged with a change, sent once, redriven when stale."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from orderpally import clients
from orderpally.messaging import requests as mail

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def request(tag: str) -> mail.EmailRequest:
    return mail.EmailRequest(
        idempotency_key=f"outbox-test:{tag}", template="termination_cancelled", to_email=f"{tag}@example.com"
    )


def staged_ids(db) -> set[str]:
    return {snap.id for snap in db.collection(mail.OUTBOX).stream()}


def test_a_mail_commits_with_its_batch_or_not_at_all(emulators):
    db = clients.firestore_client()
    tag = uuid.uuid4().hex
    batch = db.batch()
    batch.set(db.document(f"outbox_test_changes/{tag}"), {"done": True})
    mail.stage_email(batch, db, request(tag), NOW)
    assert mail.key_digest(request(tag).idempotency_key) not in staged_ids(db)  # nothing before the commit
    batch.commit()
    assert mail.key_digest(request(tag).idempotency_key) in staged_ids(db)

    published: list[mail.EmailRequest] = []
    mail.send_staged(db, request(tag), published.append)
    assert published == [request(tag)]
    assert mail.key_digest(request(tag).idempotency_key) not in staged_ids(db)


def test_the_redrive_sends_only_stale_mails_and_passes_over_unreadable_ones(emulators):
    db = clients.firestore_client()
    stale, fresh = request(f"stale-{uuid.uuid4().hex}"), request(f"fresh-{uuid.uuid4().hex}")
    batch = db.batch()
    mail.stage_email(batch, db, stale, NOW - timedelta(minutes=20))
    mail.stage_email(batch, db, fresh, NOW - timedelta(minutes=1))
    batch.commit()
    db.collection(mail.OUTBOX).document("unreadable").set(
        {"request": {"template": "not a request"}, "staged_at": NOW - timedelta(hours=1)}
    )

    published: list[mail.EmailRequest] = []
    assert mail.redrive_staged(db, NOW, timedelta(minutes=15), published.append) == 1
    assert published == [stale]
    assert staged_ids(db) == {mail.key_digest(fresh.idempotency_key), "unreadable"}
    assert mail.redrive_staged(db, NOW, timedelta(minutes=15), published.append) == 0

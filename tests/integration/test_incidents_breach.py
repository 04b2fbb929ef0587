"""A breach notice to many accounts, through the incidents service against the emulators."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orderpally import audit, clients
from orderpally.incidents import rules, service, store
from orderpally.messaging.requests import OUTBOX, key_digest

pytestmark = pytest.mark.usefixtures("emulators")
NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def notice(account_ids: list[str]) -> service.BreachNotice:
    return service.BreachNotice(
        affected_account_ids=account_ids,
        title_zh_tw="個資外洩通知",
        body_zh_tw="內容",
        title_en="Personal data breach notice",
        body_en="Body",
    )


def test_a_breach_past_one_batch_records_every_account_and_stages_every_mail():
    db = clients.firestore_client()
    reference = rules.new_reference()
    db.collection(store.INCIDENTS).document(reference).set({"state": "triaged", "category": "suspected_data_leak"})
    # More accounts than one batch can hold; some have no address, some do not exist.
    ids = [f"acct-{i:04d}" for i in range(620)]
    writer = db.bulk_writer()
    for i, account_id in enumerate(ids):
        fields = {"kind": "store", "status": "active"} | ({} if i % 10 == 0 else {"email": f"{account_id}@example.com"})
        writer.set(db.collection("accounts").document(account_id), fields)
    writer.close()
    unknown = ["acct-missing-1", "acct-missing-2"]

    mails = service.mark_breach(db, reference, notice(ids + unknown + ids[:5]), audit.SYSTEM, NOW)

    assert len(mails) == 558  # every existing account with an address, once
    assert {m.account_id for m in mails} == {a for i, a in enumerate(ids) if i % 10}
    recipients = db.collection(store.INCIDENTS).document(reference).collection(store.BREACH_RECIPIENTS).get()
    assert len(recipients) == 620
    staged = db.get_all([db.collection(OUTBOX).document(key_digest(m.idempotency_key)) for m in mails])
    assert all(snap.exists for snap in staged)
    assert db.collection(store.INCIDENTS).document(reference).get().to_dict()["personal_data_breach"] is True

"""Records requests over HTTP: asked, built through Pub/Sub, mailed, downloaded by their owner only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import pytest
import requests

from orderpally import audit, clients
from smtp_sink import read_mailbox
from support.identities import browser_headers, create_customer, create_identity
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def test_a_customer_gets_their_records_as_jsonl_and_csv(running_stack):
    alice, bob = create_customer(), create_customer()
    audit.record(
        clients.firestore_client(),
        alice.uid,
        audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", alice.uid), "203.0.113.5"),
    )
    audit.record(
        clients.firestore_client(),
        alice.uid,
        audit.AuditEvent("staff.read", audit.Actor("staff", "s1", "support"), None, "ticket 12 付款問題"),
    )
    audit.record(
        clients.firestore_client(),
        bob.uid,
        audit.AuditEvent("sign_in.succeeded", audit.Actor("customer", bob.uid), "203.0.113.6"),
    )
    base = running_stack.url("account") + "/account/records-requests"

    assert (
        requests.post(
            base, json={"from": "2026-12-01", "to": "2026-01-01"}, headers=browser_headers(alice), timeout=30
        ).status_code
        == 422
    )
    assert (
        requests.post(
            base, json={"from": "2020-01-01", "to": "2026-12-31"}, headers=browser_headers(alice), timeout=30
        ).status_code
        == 422
    )
    created = requests.post(
        base, json={"from": "2026-01-01", "to": "2027-12-31"}, headers=browser_headers(alice), timeout=30
    )
    assert created.status_code == 202
    request_id = created.json()["request_id"]

    wait_for(
        lambda: (
            requests.get(f"{base}/{request_id}", headers=browser_headers(alice), timeout=30).json()["status"] == "ready"
        )
    )
    assert requests.get(f"{base}/{request_id}", headers=browser_headers(bob), timeout=30).status_code == 404
    assert requests.get(f"{base}/{request_id}/download", headers=browser_headers(bob), timeout=30).status_code == 404
    link = requests.get(
        f"{base}/{request_id}/download", headers={**browser_headers(alice), "Accept": "application/json"}, timeout=30
    )
    assert link.status_code == 200  # a script asking for JSON gets the link itself
    download = requests.get(link.json()["url"], timeout=30)
    assert download.status_code == 200
    assert link.json()["sha256"] == hashlib.sha256(download.content).hexdigest()
    assert link.json()["size"] == len(download.content)
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        lines = [json.loads(line) for line in archive.read("records.jsonl").decode().splitlines()]
        table = list(csv.DictReader(io.StringIO(archive.read("records.csv").decode("utf-8-sig"))))
    actions = [row["what"] for row in lines]
    assert "sign_in.succeeded" in actions
    assert "staff.read" in actions
    assert "records.requested" in actions
    assert all(row["actor"] != f"customer:{bob.uid}" for row in lines)
    assert [row["what"] for row in table] == actions
    assert "ticket 12 付款問題" in [row["reason"] for row in table]
    wait_for(lambda: [m for m in read_mailbox(running_stack.mailbox) if str(m["To"]) == alice.email])

    support = create_identity(roles=["support"])
    pending = requests.get(
        running_stack.url("staff") + "/staff/records-requests",
        params={"reason": "weekly records queue review"},
        headers=browser_headers(support),
        timeout=30,
    )
    assert pending.status_code == 200
    assert pending.json()["pending"] == []
    assert (
        requests.get(
            running_stack.url("staff") + "/staff/records-requests", headers=browser_headers(alice), timeout=30
        ).status_code
        == 403
    )
    assert clients.firestore_client().document(f"records_requests/{request_id}").get().to_dict()["counts"][
        "rows"
    ] == len(lines)


def test_records_requests_are_limited_per_day_with_retry_after(running_stack):
    from datetime import UTC, datetime

    from orderpally.archives import rules as limits
    from orderpally.archives import store as archive_store
    from orderpally.records import service

    alice = create_customer()
    db = clients.firestore_client()
    today = limits.taipei_day(datetime.now(UTC))
    # Today's five are used up (the last one already built).
    db.document(f"{service.RECORDS}/{'d' * 20}").set({"account_id": alice.uid, "status": "ready"})
    db.document(f"{archive_store.QUOTAS}/{alice.uid}").set(
        {"records": {"day": today, "count": limits.RECORDS.per_day, "active_id": "d" * 20}}
    )
    base = running_stack.url("account") + "/account/records-requests"
    refused = requests.post(
        base, json={"from": "2026-01-01", "to": "2026-01-31"}, headers=browser_headers(alice), timeout=10
    )
    assert refused.status_code == 429
    assert refused.json()["type"] == "urn:orderpally:problem:archive-limit"
    assert 0 < int(refused.headers["Retry-After"]) <= 86401
    assert [s.id for s in db.collection(service.RECORDS).stream() if s.get("account_id") == alice.uid] == ["d" * 20]

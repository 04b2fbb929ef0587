"""Payment-gated content export over HTTP, with billing events arriving through Pub/Sub."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import requests

from orderpally import clients
from orderpally.access import api_keys
from orderpally.config import settings
from orderpally.lifecycle import billing
from orderpally.lifecycle import export as content_export
from support import pubsub
from support.identities import browser_headers, create_customer
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def publish_billing(account_id: str, sequence: int, kind: str, amount: int) -> None:
    pubsub.publisher().publish(
        billing.TOPIC,
        billing.MESSAGE_TYPE,
        {
            "account_id": account_id,
            "sequence": sequence,
            "kind": kind,
            "amount": amount,
            "reference": f"INV-{sequence}",
            "occurred_at": datetime.now(UTC).isoformat(),
        },
    )


def test_export_is_refused_while_unpaid_and_delivered_once_paid(running_stack):
    base = running_stack.url("account") + "/account/exports"
    alice = create_customer()
    db = clients.firestore_client()
    db.collection(f"accounts/{alice.uid}/audit_trail").add({"action": "sign_in"})
    db.document("orders/o-1").set({"store_id": alice.uid, "consumer_id": "someone", "amount": 990})
    now = datetime.now(UTC)
    pepper = settings().secret("API_KEY_PEPPER")
    api_keys.create(db, alice.uid, "shop", ["audit:read"], now + timedelta(days=1), pepper, now)
    clients.storage_client().bucket(settings().attachments_bucket).blob(f"{alice.uid}/report.png").upload_from_string(
        b"png"
    )

    publish_billing(alice.uid, 1, "invoice_issued", 1500)
    wait_for(lambda: billing.outstanding(db, alice.uid)[0] == 1500)
    refused = requests.post(base, headers=browser_headers(alice), timeout=10)
    assert refused.status_code == 402
    assert refused.json()["outstanding_amount"] == 1500
    assert refused.json()["currency"] == "TWD"
    assert db.collection(content_export.EXPORTS).get() == []

    publish_billing(alice.uid, 2, "payment_received", 1500)
    publish_billing(alice.uid, 2, "payment_received", 1500)  # a duplicate publish
    wait_for(lambda: billing.outstanding(db, alice.uid)[0] == 0)
    accepted = requests.post(base, headers=browser_headers(alice), timeout=10)
    assert accepted.status_code == 202
    export_id = accepted.json()["export_id"]
    cookie = {"Cookie": browser_headers(alice)["Cookie"]}
    status = wait_for(
        lambda: (r := requests.get(f"{base}/{export_id}", headers=cookie, timeout=10).json())["status"] == "ready" and r
    )
    assert status["counts"]["orders_as_store"] == 1

    # The archive comes from Storage through a signed URL, not in the function's response.
    link = requests.get(f"{base}/{export_id}/download", headers=cookie, allow_redirects=False, timeout=30)
    assert link.status_code == 303
    assert link.headers["Location"] == link.json()["url"]
    download = requests.get(link.headers["Location"], timeout=30)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert f'filename="orderpally-export-{export_id}.zip"' in download.headers["Content-Disposition"]
    assert link.json()["sha256"] == status["sha256"] == hashlib.sha256(download.content).hexdigest()
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert json.loads(archive.read("manifest.json"))["account_id"] == alice.uid
    assert archive.read("incident_attachments/report.png") == b"png"
    profile = [json.loads(line) for line in archive.read("account_profile.jsonl").decode().splitlines()]
    assert profile[0]["data"]["email"] == alice.email
    assert len(archive.read("audit_trail.jsonl").decode().splitlines()) >= 1
    # The customer's keys, but not their keyed hashes: the service's secret, not their content.
    keys = [json.loads(line)["data"] for line in archive.read("api_keys.jsonl").decode().splitlines()]
    assert [k["name"] for k in keys] == ["shop"]
    assert all("hash" not in k for k in keys)


def test_someone_else_s_export_does_not_exist_for_you_and_expired_ones_are_gone(running_stack):
    base = running_stack.url("account") + "/account/exports"
    alice, bob = create_customer(), create_customer()
    accepted = requests.post(base, headers=browser_headers(alice), timeout=10)
    assert accepted.status_code == 202
    export_id = accepted.json()["export_id"]
    bob_cookie = {"Cookie": browser_headers(bob)["Cookie"]}
    assert requests.get(f"{base}/{export_id}", headers=bob_cookie, timeout=10).status_code == 404
    assert requests.get(f"{base}/{export_id}/download", headers=bob_cookie, timeout=10).status_code == 404
    assert requests.get(f"{base}/not-an-id", headers=bob_cookie, timeout=10).status_code == 404

    ref = clients.firestore_client().collection(content_export.EXPORTS).document(export_id)
    wait_for(lambda: ref.get().to_dict()["status"] == "ready")
    ref.update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    alice_cookie = {"Cookie": browser_headers(alice)["Cookie"]}
    assert requests.get(f"{base}/{export_id}/download", headers=alice_cookie, timeout=10).status_code == 410


def test_one_export_at_a_time_and_the_refusal_points_at_it(running_stack):
    base = running_stack.url("account") + "/account/exports"
    alice = create_customer()
    db = clients.firestore_client()
    now = datetime.now(UTC)
    # An export of Alice's still being built, as its quota slot records it.
    db.document(f"{content_export.EXPORTS}/{'q' * 20}").set(
        {"export_id": "q" * 20, "account_id": alice.uid, "status": "queued", "requested_at": now, "expires_at": now}
    )
    db.document(f"archive_quotas/{alice.uid}").set({"export": {"day": "2000-01-01", "count": 1, "active_id": "q" * 20}})
    refused = requests.post(base, headers=browser_headers(alice), timeout=10)
    assert refused.status_code == 409
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["in_progress"] == "q" * 20
    assert refused.headers["Location"] == f"/account/exports/{'q' * 20}"
    assert [s.id for s in db.collection(content_export.EXPORTS).stream() if s.get("account_id") == alice.uid] == [
        "q" * 20
    ]


def test_an_export_is_refused_while_billing_waits_behind_a_gap(running_stack):
    base = running_stack.url("account") + "/account/exports"
    alice = create_customer()
    db = clients.firestore_client()
    publish_billing(alice.uid, 2, "payment_received", 100)  # 1, an invoice, has not arrived
    wait_for(lambda: billing.read_state(db, alice.uid).waiting_for == 1)
    refused = requests.post(base, headers=browser_headers(alice), timeout=10)
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:orderpally:problem:billing-unsettled"
    assert refused.headers["Retry-After"]

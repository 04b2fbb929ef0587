"""Notices over HTTP: staff publish under the one-month rule, customers get one mail each, the public reads them."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from orderpally import clients
from orderpally.messaging import store as mail_store
from orderpally.notices import fanout, rules, service, store
from smtp_sink import read_mailbox
from support import pubsub
from support.identities import browser_headers, create_customer, create_identity
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("running_stack")
JUSTIFICATION = "A court order requires this change without delay."


def taipei_today() -> date:
    return rules.taipei_date(datetime.now(UTC))


def body(**overrides) -> dict:
    return {
        "kind": "service_change",
        "text": {
            "zh-TW": {"title": "直播競標功能調整", "body": "競標結束時間將延長。"},
            "en": {"title": "Live auction change", "body": "Auctions will end later."},
        },
        "affects": {"plans": ["pro"], "features": ["live-auction"]},
        "effective_date": rules.add_one_month(taipei_today()).isoformat(),
        **overrides,
    }


@pytest.fixture
def admin():
    return create_identity(roles=["admin"])


def post(url: str, identity, payload: dict) -> requests.Response:
    return requests.post(url, json=payload, headers=browser_headers(identity), timeout=30)


def test_rule_breaking_notices_are_refused_with_the_earliest_date(running_stack, admin):
    url = running_stack.url("staff") + "/staff/notices"
    earliest = rules.add_one_month(taipei_today())
    short = post(url, admin, body(effective_date=(earliest - timedelta(days=1)).isoformat()))
    assert short.status_code == 422
    assert short.headers["Content-Type"].startswith("application/problem+json")
    assert short.json()["earliest_effective_date"] == earliest.isoformat()
    assert short.json()["type"] == "urn:orderpally:problem:effective-date-too-early"

    unjustified = post(
        url,
        admin,
        body(effective_date=taipei_today().isoformat(), exemption={"kind": "force_majeure", "justification": "x"}),
    )
    assert unjustified.status_code == 422
    assert unjustified.json()["field"] == "exemption.justification"

    backdated = post(url, admin, body(publish_at=(datetime.now(UTC) - timedelta(days=2)).isoformat()))
    assert backdated.status_code == 422
    assert backdated.json()["type"] == "urn:orderpally:problem:notice-backdated"

    customer = create_customer()
    assert post(url, customer, body()).status_code == 403
    assert requests.post(url, json=body(), timeout=30).status_code == 401
    assert clients.firestore_client().collection(store.NOTICES).get() == []

    exempt = post(
        url,
        admin,
        body(
            effective_date=taipei_today().isoformat(),
            exemption={"kind": "legal_requirement", "justification": JUSTIFICATION},
        ),
    )
    assert exempt.status_code == 201


def test_each_affected_customer_gets_one_mail_in_their_language_even_on_redelivery(running_stack, admin):
    db = clients.firestore_client()
    pro_zh = create_customer(language="zh-TW")
    auction_en = create_customer(language="en")
    unaffected = create_customer(kind="consumer")
    db.document(f"accounts/{pro_zh.uid}").update({"plan": "pro"})
    db.document(f"accounts/{auction_en.uid}").update({"plan": "basic", "features": ["live-auction"]})
    db.document(f"accounts/{unaffected.uid}").update({"plan": "basic", "features": ["chat"]})

    created = post(running_stack.url("staff") + "/staff/notices", admin, body())
    assert created.status_code == 201, created.text
    notice_id = created.json()["id"]
    job = db.collection(store.FANOUTS).document(service.fanout_id(notice_id, 1))
    wait_for(lambda: (job.get().to_dict() or {}).get("status") == "done")
    wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= 2)

    # Redeliver: the scheduled releaser after the mailing stalled, and a duplicate fan-out message.
    job.update({"status": "running", "updated_at": datetime.now(UTC) - timedelta(hours=1)})
    assert requests.post(running_stack.url("notice-release"), timeout=30).json()["released"] == 1
    pubsub.publisher().publish(fanout.TOPIC, fanout.MESSAGE_TYPE, {"job_id": service.fanout_id(notice_id, 1)})
    wait_for(lambda: (job.get().to_dict() or {}).get("status") == "done")
    time.sleep(2.0)  # time for a wrongly repeated mail to arrive

    mails = {str(m["To"]): m for m in read_mailbox(running_stack.mailbox)}
    assert len(read_mailbox(running_stack.mailbox)) == 2
    assert set(mails) == {pro_zh.email, auction_en.email}
    assert mails[pro_zh.email]["Content-Language"] == "zh-TW"
    assert "直播競標功能調整" in str(mails[pro_zh.email]["Subject"])
    assert "Live auction change" in str(mails[auction_en.email]["Subject"])
    assert f"id={notice_id}" in mails[auction_en.email].get_body(("plain",)).get_content()

    # A correction is a new version, mailed once more to the same customers.
    fixed = post(
        running_stack.url("staff") + f"/staff/notices/{notice_id}/versions",
        admin,
        {
            "text": body()["text"],
            "effective_date": (rules.add_one_month(taipei_today()) + timedelta(days=3)).isoformat(),
            "correction_note": "The date moves three days later.",
        },
    )
    assert fixed.status_code == 201, fixed.text
    wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= 4)
    key = f"notice:{notice_id}:v2:{pro_zh.uid}"
    assert mail_store.record_of(db, key)["status"] == "sent"


def test_the_public_reads_published_notices_as_json_atom_and_html(running_stack, admin):
    staff_url = running_stack.url("staff") + "/staff/notices"
    published = post(staff_url, admin, body(affects={"all": True})).json()["id"]
    later = post(
        staff_url,
        admin,
        body(
            publish_at=(datetime.now(UTC) + timedelta(days=2)).isoformat(),
            effective_date=rules.add_one_month(taipei_today() + timedelta(days=2)).isoformat(),
        ),
    )
    assert later.status_code == 201
    base = running_stack.url("notices") + "/notices"

    listing = requests.get(base, timeout=30).json()
    assert [n["id"] for n in listing["notices"]] == [published]
    assert requests.get(f"{base}/{later.json()['id']}", timeout=30).status_code == 404
    assert requests.get(base, params={"kind": "sla"}, timeout=30).json()["notices"] == []
    assert requests.get(base, params={"page_token": "garbage"}, timeout=30).status_code == 400
    assert requests.get(base, params={"kind": "other"}, timeout=30).status_code == 422

    feed = requests.get(f"{base}/feed.atom", params={"lang": "en"}, timeout=30)
    assert feed.headers["Content-Type"].startswith("application/atom+xml")
    # Our own feed, from the local stack: not untrusted input.
    entries = ET.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")  # noqa: S314
    assert [e.findtext("{http://www.w3.org/2005/Atom}title") for e in entries] == ["Live auction change"]

    zh = requests.get(f"{base}/page", timeout=30)
    en = requests.get(f"{base}/page", headers={"Accept-Language": "en-US,en;q=0.9"}, timeout=30)
    assert zh.headers["Content-Language"] == "zh-TW"
    assert "直播競標功能調整" in zh.text
    assert en.headers["Content-Language"] == "en"
    assert "Live auction change" in en.text
    assert "script-src" not in en.headers["Content-Security-Policy"]
    assert "default-src 'none'" in en.headers["Content-Security-Policy"]

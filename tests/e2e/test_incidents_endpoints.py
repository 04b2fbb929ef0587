"""Security incident intake, the reporter's view, staff triage, deadlines and security.txt, over HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from orderpally import clients
from orderpally.config import settings
from orderpally.incidents import rules
from smtp_sink import read_mailbox
from support.identities import browser_headers, create_customer, create_identity
from support.payloads import incident_report as report
from support.waiting import links_in, mails_to, wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def local(stack, link: str) -> str:
    """Mailed links use the public base URL; locally that is the notices function, so point at incidents."""
    return link.replace(settings().public_base_url, stack.url("incidents"))


WHY = {"reason": "security review of the report"}


def submit(stack, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(stack.url("incidents") + "/incidents", json=body, headers=headers or {}, timeout=30)


def test_anonymous_report_is_acknowledged_confirmed_and_pages_once(running_stack):
    created = submit(running_stack, report())
    assert created.status_code == 201
    reference = created.json()["reference"]
    assert rules.REFERENCE.fullmatch(reference)
    assert created.json()["confirmation_required"] is True

    ack = wait_for(lambda: mails_to(running_stack.mailbox, "reporter@example.com"))[0]
    assert reference in str(ack["Subject"])
    status_link, confirm_link = sorted(links_in(ack), key=lambda link: "confirm" in link)
    oncall = settings().security_oncall_email
    assert mails_to(running_stack.mailbox, oncall) == []  # not paged before the address is confirmed

    base = running_stack.url("incidents") + f"/incidents/{reference}"
    assert requests.get(base, timeout=30).status_code == 404
    assert requests.get(base, params={"token": "x" * 40}, timeout=30).status_code == 404
    status = requests.get(local(running_stack, status_link), timeout=30)
    assert status.status_code == 200
    assert status.json()["state"] == "received"

    for _ in range(2):
        assert requests.get(local(running_stack, confirm_link), timeout=30).json()["confirmed"] is True
    wait_for(lambda: mails_to(running_stack.mailbox, oncall))
    time.sleep(1.0)
    assert len(mails_to(running_stack.mailbox, oncall)) == 1


def test_customer_report_is_theirs_alone_and_idempotent(running_stack):
    alice, bob = create_customer(), create_customer()
    headers = {**browser_headers(alice), "Idempotency-Key": "double-click-0001"}
    body = report(category="vulnerability", contact_email=None)
    first = submit(running_stack, body, headers)
    again = submit(running_stack, body, headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["reference"] == first.json()["reference"]
    assert len(clients.firestore_client().collection("incidents").get()) == 1
    assert first.json()["confirmation_required"] is False
    # The same key with another report is a mistake, not a retry: refused, not silently dropped.
    other = submit(running_stack, report(category="suspected_data_leak", contact_email=None), headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    assert len(clients.firestore_client().collection("incidents").get()) == 1

    url = running_stack.url("incidents") + f"/incidents/{first.json()['reference']}"
    assert requests.get(url, headers=browser_headers(alice), timeout=30).status_code == 200
    assert requests.get(url, headers=browser_headers(bob), timeout=30).status_code == 404
    wait_for(lambda: mails_to(running_stack.mailbox, alice.email))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (report(category="ufo_sighting"), 422),
        (report(description="<script>alert(1)</script> my shop was hacked"), 422),
        (report(description="x" * 5001), 422),
        (report(contact_email=None), 422),
        (report(references=["../../etc/passwd"]), 422),
        ({**report(), "severity": "low"}, 422),
    ],
)
def test_bad_reports_are_refused_and_store_nothing(running_stack, body, status):
    assert submit(running_stack, body).status_code == status
    assert clients.firestore_client().collection("incidents").get() == []
    assert read_mailbox(running_stack.mailbox) == []


def test_staff_triage_replies_and_audited_opens(running_stack):
    customer = create_customer()
    security = create_identity(roles=["security"])
    support = create_identity(roles=["support"])
    created = submit(
        running_stack, report(category="phishing_or_impersonation", contact_email=None), browser_headers(customer)
    )
    reference = created.json()["reference"]
    staff = running_stack.url("staff") + "/staff/incidents"

    assert requests.get(staff, headers=browser_headers(support), timeout=30).status_code == 403
    why = {"reason": "security review of the report"}
    listed = requests.get(
        staff, params={"state": "received", **why}, headers=browser_headers(security), timeout=30
    ).json()
    assert [i["reference"] for i in listed["incidents"]] == [reference]
    opened = requests.get(f"{staff}/{reference}", params=why, headers=browser_headers(security), timeout=30).json()
    assert opened["description"].startswith("Orders of my shop")
    assert [h["action"] for h in opened["history"]] == ["incident.received", "staff.opened"]

    def patch(body):
        return requests.patch(f"{staff}/{reference}", json=body, headers=browser_headers(security), timeout=30)

    assert patch({"state": "resolved"}).status_code == 409  # received cannot jump to resolved
    triaged = patch({"state": "triaged", "severity": "high"})
    assert triaged.status_code == 200
    assert triaged.json()["severity"] == "high"
    assert triaged.json()["first_responded_at"] is not None

    note = requests.post(
        f"{staff}/{reference}/notes",
        json={"text": "internal: looks like kit #7", "visibility": "internal"},
        headers=browser_headers(security),
        timeout=30,
    )
    reply = requests.post(
        f"{staff}/{reference}/notes",
        json={"text": "We took the page down.", "visibility": "public"},
        headers=browser_headers(security),
        timeout=30,
    )
    assert note.status_code == reply.status_code == 204
    mail = wait_for(
        lambda: [
            m
            for m in mails_to(running_stack.mailbox, customer.email)
            if "We took the page down." in m.get_body(("plain",)).get_content()
        ]
    )[0]
    view = requests.get(local(running_stack, links_in(mail)[0]), timeout=30).json()
    assert [r["text"] for r in view["replies"]] == ["We took the page down."]
    assert "kit #7" not in str(view)

    trail = requests.get(
        running_stack.url("account") + "/account/audit-trail", headers=browser_headers(customer), timeout=30
    ).json()
    assert "staff.read" in [e["action"] for e in trail["entries"]]
    verification = requests.get(
        running_stack.url("staff") + f"/staff/accounts/{customer.uid}/audit-trail/verification",
        params={"reason": "checking the trail after the incident"},
        headers=browser_headers(security),
        timeout=30,
    ).json()
    assert verification["intact"] is True


def test_deadlines_alert_the_on_call_once(running_stack):
    created = submit(running_stack, report(category="other"))
    reference = created.json()["reference"]
    past = datetime.now(UTC) - timedelta(minutes=5)
    clients.firestore_client().document(f"incidents/{reference}").update({"first_response_due": past})
    fire = running_stack.url("incident-deadlines")
    assert requests.post(fire, timeout=30).json()["alerts"] == 1
    assert requests.post(fire, timeout=30).json()["alerts"] == 1  # still overdue: same alert, same key
    oncall = settings().security_oncall_email
    wait_for(lambda: mails_to(running_stack.mailbox, oncall))
    time.sleep(1.0)
    (mail,) = mails_to(running_stack.mailbox, oncall)
    assert reference in str(mail["Subject"])
    assert "overdue" in str(mail["Subject"])


def test_sweeps_after_a_page_neither_page_nor_record_it_again(running_stack):
    from orderpally import audit
    from orderpally.incidents import service

    customer = create_customer()
    created = submit(
        running_stack, report(category="account_compromise", contact_email=None), browser_headers(customer)
    )
    reference = created.json()["reference"]
    fire = running_stack.url("incident-deadlines")
    for _ in range(2):
        assert requests.post(fire, timeout=30).status_code == 200
    actions = [entry["action"] for entry in audit.chain_page(service.chain(clients.firestore_client(), reference), 100)]
    assert actions.count("incident.paged") == 1
    assert clients.firestore_client().document(f"incidents/{reference}").get().get("paged_at") is not None


def test_security_txt_follows_rfc_9116(running_stack):
    response = requests.get(running_stack.url("well-known") + "/.well-known/security.txt", timeout=30)
    assert response.headers["Content-Type"].startswith("text/plain")
    fields = [line.split(": ", 1) for line in response.text.strip().splitlines()]
    names = [name for name, _ in fields]
    assert names.count("Contact") == 2
    assert {"Expires", "Preferred-Languages", "Policy", "Canonical"} <= set(names)
    expires = datetime.fromisoformat(dict(fields)["Expires"])
    assert datetime.now(UTC) < expires < datetime.now(UTC) + timedelta(days=365)
    assert dict(fields)["Preferred-Languages"] == "zh-TW, en"
    policy = requests.get(
        dict(fields)["Policy"].replace(settings().public_base_url, running_stack.url("incidents")), timeout=30
    )
    assert policy.status_code == 200


def test_a_breach_notifies_each_affected_customer_once_in_their_language(running_stack):
    zh, en = create_customer(language="zh-TW"), create_customer(language="en")
    security = create_identity(roles=["security"])
    reference = submit(running_stack, report()).json()["reference"]
    url = running_stack.url("staff") + f"/staff/incidents/{reference}/breach"
    body = {
        "affected_account_ids": [zh.uid, en.uid, en.uid, "no-such-account"],
        "title_zh_tw": "個人資料外洩通知",
        "body_zh_tw": "您的訂單資料可能外洩。",
        "title_en": "Personal data breach notice",
        "body_en": "Your order data may have leaked.",
    }
    marked = requests.post(url, json=body, headers=browser_headers(security), timeout=30)
    assert marked.status_code == 202
    assert sorted(r["account_id"] for r in marked.json()["recipients"]) == sorted([zh.uid, en.uid])
    requests.post(url, json=body, headers=browser_headers(security), timeout=30)  # marked twice: still one mail each

    def all_sent():
        rows = requests.get(url, params=WHY, headers=browser_headers(security), timeout=30).json()["recipients"]
        return rows if all(r["notified_at"] for r in rows) else None

    rows = wait_for(all_sent)
    assert len(rows) == 2
    time.sleep(1.0)
    assert len(mails_to(running_stack.mailbox, zh.email)) == 1
    assert "個人資料外洩通知" in str(mails_to(running_stack.mailbox, zh.email)[0]["Subject"])
    assert "Personal data breach notice" in str(mails_to(running_stack.mailbox, en.email)[0]["Subject"])


def test_reporters_attach_files_that_staff_get_back_only_as_downloads(running_stack):
    customer = create_customer()
    security = create_identity(roles=["security"])
    reference = submit(running_stack, report(contact_email=None), browser_headers(customer)).json()["reference"]
    url = running_stack.url("incidents") + f"/incidents/{reference}/attachments"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

    def upload(data: bytes, content_type: str, headers: dict | None = None) -> requests.Response:
        return requests.post(
            url, data=data, headers={**(headers or browser_headers(customer)), "Content-Type": content_type}, timeout=30
        )

    assert upload(png, "image/png").status_code == 201
    assert upload(b"<html><script>alert(1)</script>", "image/png").status_code == 422  # not what it says it is
    assert upload(b"MZ\x90\x00", "application/x-msdownload").status_code == 415
    assert upload(b"x" * (5 * 1024 * 1024 + 1), "text/plain").status_code == 413
    assert upload(png, "image/png", browser_headers(create_customer())).status_code == 404  # not their report
    for _ in range(4):
        assert upload("第二張截圖說明".encode(), "text/plain").status_code == 201
    assert upload(png, "image/png").status_code == 409

    staff = running_stack.url("staff") + f"/staff/incidents/{reference}/attachments/1"
    # A link followed in a staff member's browser carries the cookie, not the token: nothing is read.
    link = {"Cookie": browser_headers(security)["Cookie"]}
    assert requests.get(staff, params=WHY, headers=link, timeout=30).status_code == 403
    assert requests.get(staff, headers=browser_headers(security), timeout=30).status_code == 422  # no reason
    got = requests.get(staff, params=WHY, headers=browser_headers(security), timeout=30)
    assert got.status_code == 200
    assert got.content == png
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert requests.get(staff, params=WHY, headers=browser_headers(customer), timeout=30).status_code == 403
    # The reporter sees that security opened their file, and why.
    trail = requests.get(
        running_stack.url("account") + "/account/audit-trail", headers=browser_headers(customer), timeout=30
    ).json()["entries"]
    assert [e["reason"] for e in trail if e["action"] == "staff.read"] == [WHY["reason"]]


def test_concurrent_uploads_keep_the_limit_and_every_file(running_stack):
    from concurrent.futures import ThreadPoolExecutor

    from orderpally import audit
    from orderpally.incidents import service

    customer = create_customer()
    reference = submit(running_stack, report(contact_email=None), browser_headers(customer)).json()["reference"]
    url = running_stack.url("incidents") + f"/incidents/{reference}/attachments"

    def upload(i: int) -> requests.Response:
        headers = {**browser_headers(customer), "Content-Type": "text/plain"}
        return requests.post(url, data=f"screenshot note {i}".encode(), headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(upload, range(8)))
    assert sorted(a.status_code for a in answers) == [201] * rules.MAX_ATTACHMENTS + [409] * (8 - rules.MAX_ATTACHMENTS)
    numbers = sorted(a.json()["number"] for a in answers if a.status_code == 201)
    assert numbers == list(range(1, rules.MAX_ATTACHMENTS + 1))
    stored = clients.firestore_client().document(f"incidents/{reference}").get().to_dict()["attachments"]
    assert len(stored) == len(numbers)
    assert len({entry["object"] for entry in stored}) == len(numbers)
    objects = list(clients.storage_client().list_blobs(settings().attachments_bucket, prefix=f"{customer.uid}/"))
    assert sorted(o.name for o in objects) == sorted(entry["object"] for entry in stored)  # no orphans
    history = [
        e
        for e in audit.chain_page(service.chain(clients.firestore_client(), reference), 100)
        if e["action"] == "incident.attachment"
    ]
    assert len(history) == len(numbers)


def test_a_staff_read_of_a_retained_report_starts_no_trail_for_its_pseudonym(running_stack):
    from orderpally.incidents import store

    reference = submit(running_stack, report()).json()["reference"]
    pseudonym = "pseudonym:0123456789abcdef01234567"
    db = clients.firestore_client()
    db.document(f"{store.INCIDENTS}/{reference}").update({"reporter_account_id": pseudonym})
    security = create_identity(roles=["security"])
    opened = requests.get(
        running_stack.url("staff") + f"/staff/incidents/{reference}", params=WHY, headers=browser_headers(security)
    )
    assert opened.status_code == 200
    assert not db.document(f"audit_chains/{pseudonym}").get().exists
    assert list(db.collection(f"accounts/{pseudonym}/audit_trail").stream()) == []


def test_the_staff_list_holds_the_newest_reports_when_there_are_more_than_it_shows(running_stack):
    from orderpally.incidents.http import STAFF_LIST_LIMIT

    db = clients.firestore_client()
    long_ago = datetime.now(UTC) - timedelta(days=30)
    batch = db.batch()
    # Older reports whose references sort before any real one ("OPI-..."), so that a list that
    # took the first documents by name before sorting would show only these.
    for n in range(STAFF_LIST_LIMIT):
        fields = {"category": "other", "state": "received", "severity": "medium"}
        batch.set(
            db.collection("incidents").document(f"OPA-{n:04d}"),
            {**fields, "created_at": long_ago + timedelta(minutes=n)},
        )
    batch.commit()
    newest = submit(running_stack, report()).json()["reference"]
    security = create_identity(roles=["security"])
    listed = requests.get(
        running_stack.url("staff") + "/staff/incidents",
        params={"state": "received", "reason": "weekly triage of open reports"},
        headers=browser_headers(security),
        timeout=30,
    ).json()["incidents"]
    assert len(listed) == STAFF_LIST_LIMIT
    assert listed[0]["reference"] == newest
    assert listed[1]["reference"] == f"OPA-{STAFF_LIST_LIMIT - 1:04d}"

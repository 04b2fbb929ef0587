"""Topic-triggered functions under faults: crashes at each step, duplicate and concurrent
deliveries, malformed and stale messages. Each ends with the work done exactly once."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from orderpally import clients, events
from orderpally.config import settings
from orderpally.lifecycle import billing
from orderpally.messaging.requests import EmailRequest
from smtp_sink import read_mailbox
from support import pubsub
from support.identities import create_customer
from support.waiting import links_in, mails_to, wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def arm(function: str, point: str, times: int = 1) -> None:
    clients.firestore_client().document(events.fault_document(function)).set({"point": point, "remaining": times})


def fired(function: str) -> bool:
    # Wait for it (wait_for(lambda: fired(...))): after-handler, the effect a test waits for is
    # visible before the crash point's own transaction commits.
    fault = clients.firestore_client().document(events.fault_document(function)).get().to_dict() or {}
    return fault.get("remaining", 1) == 0


def queued_export(account_id: str, requested_at: datetime) -> dict:
    """An export request as the account function writes it, with no build message sent."""
    from orderpally.lifecycle import export

    db = clients.firestore_client()
    batch = db.batch()
    record = export.create_request(db, account_id, (0, "TWD"), requested_at, 7, batch)
    batch.commit()
    return record


def staged_mails(field: str, value: str) -> list:
    """The mail outbox's entries whose request has `field` equal to `value`."""
    from orderpally.messaging import requests as mail

    return [s for s in clients.firestore_client().collection(mail.OUTBOX).stream() if s.get("request")[field] == value]


def make_stale(staged) -> None:
    """As if staged long enough ago for archive-redrive to take it."""
    staged.reference.update({"staged_at": datetime.now(UTC) - timedelta(minutes=20)})


def topic_functions(stack) -> list:
    return [info for info in stack.functions if info.entry.kind == "topic"]


def post_event(url: str, data: bytes, event_id: str, published: datetime) -> requests.Response:
    """A Pub/Sub push in CloudEvents binary mode, as the emulator's push subscription would send it."""
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": event_id,
            "publishTime": published.isoformat(),
        },
        "subscription": "s",
    }
    headers = {
        "ce-id": event_id,
        "ce-specversion": "1.0",
        "ce-source": "//pubsub.googleapis.com/projects/demo-orderpally/topics/t",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-time": published.isoformat(),
        "Content-Type": "application/json",
    }
    return requests.post(url, data=json.dumps(body), headers=headers, timeout=30)


def ledger_status(function: str, event_id: str) -> str | None:
    safe = base64.urlsafe_b64encode(f"{function}:{event_id}".encode()).decode().rstrip("=")
    return (clients.firestore_client().collection(events.LEDGER_COLLECTION).document(safe).get().to_dict() or {}).get(
        "status"
    )


def test_malformed_and_stale_messages_are_recorded_and_acknowledged_by_every_topic_function(running_stack):
    for info in topic_functions(running_stack):
        function = info.entry.entry_point
        bad = post_event(info.url, b"{not json", f"bad-{function}", datetime.now(UTC))
        assert bad.status_code < 300, (function, bad.status_code)
        assert ledger_status(function, f"bad-{function}") == events.Outcome.MALFORMED
        old = datetime.now(UTC) - timedelta(days=30)
        stale = post_event(
            info.url, json.dumps({"schema_version": 1, "type": "x", "data": {}}).encode(), f"old-{function}", old
        )
        assert stale.status_code < 300, (function, stale.status_code)
        assert ledger_status(function, f"old-{function}") == events.Outcome.TOO_OLD


@pytest.mark.parametrize("point", ["before-handler", "after-handler"])
def test_a_crashed_email_delivery_is_redelivered_and_sent_once(running_stack, point):
    arm("send_notice_email", point)
    pubsub.request_email(
        EmailRequest(idempotency_key=f"crash-{point}", template="termination_cancelled", to_email="crash@example.com")
    )
    wait_for(lambda: read_mailbox(running_stack.mailbox))
    assert wait_for(lambda: fired("send_notice_email"), timeout=30)
    time.sleep(2.0)
    assert len(read_mailbox(running_stack.mailbox)) == 1


def invoice_of_700(account: str) -> dict:
    """A billing event: the account's first invoice, TWD 700."""
    return {
        "account_id": account,
        "sequence": 1,
        "kind": "invoice_issued",
        "amount": 700,
        "reference": "INV-1",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


@pytest.mark.parametrize("point", ["before-handler", "after-handler"])
def test_a_crashed_billing_event_is_applied_once(running_stack, point):
    account = f"acct-{uuid.uuid4().hex[:8]}"
    arm("record_billing_event", point)
    pubsub.publisher().publish(billing.TOPIC, billing.MESSAGE_TYPE, invoice_of_700(account))
    db = clients.firestore_client()
    wait_for(lambda: billing.outstanding(db, account)[0] == 700)
    assert wait_for(lambda: fired("record_billing_event"), timeout=30)
    time.sleep(2.0)
    assert billing.outstanding(db, account) == (700, "TWD")


def test_duplicate_and_concurrent_deliveries_have_one_effect(running_stack):
    info = next(i for i in topic_functions(running_stack) if i.entry.entry_point == "send_notice_email")
    envelope = events.envelope(
        "notice_email.requested",
        EmailRequest(idempotency_key="dup-1", template="termination_cancelled", to_email="dup@example.com").model_dump(
            mode="json"
        ),
    )
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda i: post_event(info.url, envelope, "same-event", now).status_code, range(6)))
    # Deliveries that found another one in flight ask Pub/Sub to come back later (non-2xx): none fail otherwise.
    assert all(code < 300 or code in (500, 503) for code in answers)
    post_event(info.url, envelope, "same-event", now)  # a redelivery after it settled
    post_event(info.url, envelope, "another-event-same-request", now)  # a duplicate publish
    wait_for(lambda: read_mailbox(running_stack.mailbox))
    time.sleep(2.0)
    assert len(read_mailbox(running_stack.mailbox)) == 1


def notice_to_everyone(title: str) -> dict:
    """A service-change notice, published now, to every customer; its mailing not yet released."""
    from orderpally.notices import rules, service

    today = rules.taipei_date(datetime.now(UTC))
    draft = service.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {"zh-TW": {"title": title, "body": "內容"}, "en": {"title": title, "body": "Body"}},
            "affects": {"all": True},
            "effective_date": rules.add_one_month(today).isoformat(),
        }
    )
    return service.create_notice(clients.firestore_client(), draft, "staff", datetime.now(UTC))


def test_a_fan_out_crashing_midway_mails_everyone_once(running_stack):
    from orderpally.notices import http as notices_http
    from orderpally.notices import service

    customers = [create_customer() for _ in range(4)]
    arm("fan_out_notice", "after-handler")
    notice = notice_to_everyone("Fault test")
    notices_http.release_now(service.fanout_id(notice["id"], 1))
    wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= len(customers))
    assert wait_for(lambda: fired("fan_out_notice"), timeout=30)
    time.sleep(2.0)
    recipients = sorted(str(m["To"]) for m in read_mailbox(running_stack.mailbox))
    assert recipients == sorted(c.email for c in customers)


def test_a_fan_out_whose_mail_batch_crashes_midway_mails_everyone_exactly_once(running_stack):
    from orderpally.messaging import delivery
    from orderpally.notices import http as notices_http
    from orderpally.notices import service

    customers = [create_customer() for _ in range(6)]
    arm(delivery.BATCH_FAULTS, "after-mail:3")  # the notice-email function dies after its third mail
    notice = notice_to_everyone("Batch crash")
    notices_http.release_now(service.fanout_id(notice["id"], 1))
    wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= len(customers))
    assert wait_for(lambda: fired(delivery.BATCH_FAULTS), timeout=30)
    time.sleep(2.0)
    recipients = sorted(str(m["To"]) for m in read_mailbox(running_stack.mailbox))
    assert recipients == sorted(c.email for c in customers)
    # One batch: three mails went before the crash, the redelivery sent the other three.
    db = clients.firestore_client()
    attempts = sorted(delivery.record_of(db, f"notice:{notice['id']}:v1:{c.uid}")["attempts"] for c in customers)
    assert attempts == [1, 1, 1, 2, 2, 2]


def test_an_export_whose_build_message_was_lost_is_redriven_and_built_once(running_stack):
    from orderpally.lifecycle import export

    customer = create_customer()
    db = clients.firestore_client()
    long_ago = datetime.now(UTC) - timedelta(minutes=20)
    # The request was written, then the function crashed before publishing its message.
    record = queued_export(customer.uid, long_ago)
    fire = running_stack.url("archive-redrive")
    assert requests.post(fire, timeout=30).json()[export.EXPORTS] == 1
    assert requests.post(fire, timeout=30).json()[export.EXPORTS] == 0  # not again until it is stale again
    done = wait_for(
        lambda: (db.document(f"{export.EXPORTS}/{record['export_id']}").get().to_dict() or {}).get("status") == "ready"
    )
    assert done
    wait_for(lambda: read_mailbox(running_stack.mailbox))
    time.sleep(1.0)
    assert len(read_mailbox(running_stack.mailbox)) == 1


@pytest.mark.parametrize("point", ["before-handler", "before-mail", "after-handler"])
def test_crashed_archive_builds_finish_once(running_stack, point):
    from orderpally.lifecycle import export
    from orderpally.records import service as records
    from support.identities import browser_headers

    customer = create_customer()
    db = clients.firestore_client()
    arm("build_content_export", point)
    arm("build_records", point)
    exported = requests.post(
        running_stack.url("account") + "/account/exports", headers=browser_headers(customer), timeout=30
    )
    asked = requests.post(
        running_stack.url("account") + "/account/records-requests",
        json={"from": "2026-01-01", "to": "2027-12-31"},
        headers=browser_headers(customer),
        timeout=30,
    )
    assert exported.status_code == asked.status_code == 202
    export_ref = db.document(f"{export.EXPORTS}/{exported.json()['export_id']}")
    records_ref = db.document(f"{records.RECORDS}/{asked.json()['request_id']}")
    wait_for(lambda: export_ref.get().get("status") == "ready" and records_ref.get().get("status") == "ready")
    assert wait_for(lambda: fired("build_content_export"), timeout=30)
    assert wait_for(lambda: fired("build_records"), timeout=30)
    wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= 2)
    time.sleep(2.0)
    assert len(read_mailbox(running_stack.mailbox)) == 2  # one "ready" mail each, however often built
    objects = list(clients.storage_client().list_blobs(settings().exports_bucket, prefix=f"{customer.uid}/"))
    assert len(objects) == 2


@pytest.mark.parametrize("point", ["before-handler", "after-handler"])
def test_a_crashed_heartbeat_is_recorded_once(running_stack, point):
    from orderpally.heartbeat import service as heartbeat

    db = clients.firestore_client()
    arm("record_heartbeat", point)
    beat = heartbeat.new_heartbeat(datetime.now(UTC), source=f"fault-{point}")
    message_id = pubsub.publisher().publish(
        settings().heartbeat_topic, heartbeat.MESSAGE_TYPE, beat.model_dump(mode="json")
    )
    stored = wait_for(
        lambda: (db.document("/".join(heartbeat.DOCUMENT)).get().to_dict() or {}).get("source") == beat.source
    )
    assert stored
    assert wait_for(lambda: fired("record_heartbeat"), timeout=30)
    time.sleep(2.0)
    recorded = db.document("/".join(heartbeat.DOCUMENT)).get().to_dict()
    assert recorded["event_id"] == message_id
    assert recorded["emitted_at"] == beat.emitted_at
    assert ledger_status("record_heartbeat", message_id) == events.Outcome.DONE


@pytest.mark.parametrize(
    "point",
    [
        "before-handler",
        "before-commit:account_profile",
        "before-commit:audit_trail",
        "before-commit:orders_as_consumer",
        "after-handler",
    ],
)
def test_a_crashed_account_deletion_is_finished_by_redelivery_and_counted_once(running_stack, point):
    from orderpally.lifecycle import deletion

    db = clients.firestore_client()
    account = f"gone-{uuid.uuid4().hex[:8]}"
    db.document(f"accounts/{account}").set({"kind": "consumer", "email": f"{account}@example.test"})
    for i in range(5):
        db.collection(f"accounts/{account}/audit_trail").add({"action": f"a{i}"})
    order = db.document(f"orders/{account}-o1")
    order.set({"store_id": "demo-store", "consumer_id": account, "consumer_name": "Gone", "amount": 9})
    deletion.request_deletion(db, account, account, "customer request")
    arm("run_account_deletion", point)
    pubsub.publisher().publish(deletion.TOPIC, deletion.MESSAGE_TYPE, {"account_id": account})

    certificate_ref = db.document(f"{deletion.CERTIFICATES}/{account}")
    assert wait_for(lambda: (certificate_ref.get().to_dict() or {}).get("status") == "completed", timeout=60)
    assert wait_for(lambda: fired("run_account_deletion"), timeout=30)
    time.sleep(2.0)
    counts = {name: entry["counts"] for name, entry in certificate_ref.get().to_dict()["locations"].items()}
    assert counts["account_profile"] == {"deleted": 1}
    assert counts["audit_trail"] == {"deleted": 5}
    assert sum(counts["orders_as_consumer"].values()) == 1
    assert not db.document(f"accounts/{account}").get().exists
    assert list(db.collection(f"accounts/{account}/audit_trail").limit(1).stream()) == []
    assert order.get().to_dict()["consumer_name"] is None


def incident_report(**overrides) -> dict:
    return {
        "category": "suspected_data_leak",
        "description": "Orders of my shop appear on a public paste site.",
        "contact_email": "crashed-intake@example.com",
        "language": "en",
        **overrides,
    }


def history_actions(reference: str) -> list[str]:
    from orderpally import audit
    from orderpally.incidents import service

    return [entry["action"] for entry in audit.chain_page(service.chain(clients.firestore_client(), reference), 100)]


@pytest.mark.parametrize(
    "point", ["before:history", "after:history", "before:acknowledgement", "after:acknowledgement"]
)
def test_an_anonymous_intake_crashed_part_way_is_finished_by_the_retry(running_stack, point):
    from orderpally.incidents import intake

    arm(intake.INTAKE_FAULTS, point)
    url = running_stack.url("incidents") + "/incidents"
    headers = {"Idempotency-Key": f"crash-{uuid.uuid4().hex}"}
    crashed = requests.post(url, json=incident_report(), headers=headers, timeout=30)
    assert crashed.status_code == 500
    assert crashed.headers["Content-Type"] == "application/problem+json"
    assert wait_for(lambda: fired(intake.INTAKE_FAULTS), timeout=30)

    retried = requests.post(url, json=incident_report(), headers=headers, timeout=30)
    assert retried.status_code == 200
    assert retried.json()["duplicate"] is True
    reference = retried.json()["reference"]

    ack = wait_for(lambda: mails_to(running_stack.mailbox, "crashed-intake@example.com"))
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, "crashed-intake@example.com")) == 1
    assert reference in str(ack[0]["Subject"])
    status_link, confirm_link = sorted(links_in(ack[0]), key=lambda link: "confirm" in link)
    here = running_stack.url("incidents")
    assert requests.get(status_link.replace(settings().public_base_url, here), timeout=30).status_code == 200
    confirmed = requests.get(confirm_link.replace(settings().public_base_url, here), timeout=30)
    assert confirmed.status_code == 200
    assert history_actions(reference).count("incident.received") == 1


@pytest.mark.parametrize("point", ["after:customer_trail", "after:page"])
def test_a_customer_intake_crashed_part_way_is_finished_once(running_stack, point):
    from orderpally import audit
    from orderpally.incidents import intake
    from support.identities import browser_headers

    customer = create_customer()
    arm(intake.INTAKE_FAULTS, point)
    url = running_stack.url("incidents") + "/incidents"
    headers = {**browser_headers(customer), "Idempotency-Key": f"crash-{uuid.uuid4().hex}"}
    body = incident_report(category="account_compromise", contact_email=None)
    assert requests.post(url, json=body, headers=headers, timeout=30).status_code == 500
    retried = requests.post(url, json=body, headers=headers, timeout=30)
    assert retried.status_code == 200
    reference = retried.json()["reference"]

    def pages() -> list:
        return [
            m for m in mails_to(running_stack.mailbox, settings().security_oncall_email) if reference in m["Subject"]
        ]

    wait_for(lambda: mails_to(running_stack.mailbox, customer.email) and pages())
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, customer.email)) == 1
    assert len(pages()) == 1
    trail = [
        e for e in audit.entries(clients.firestore_client(), customer.uid, 100) if e["action"] == "incident.reported"
    ]
    assert [e["details"]["reference"] for e in trail] == [reference]
    actions = history_actions(reference)
    assert actions.count("incident.received") == 1
    assert actions.count("incident.paged") == 1


def test_an_intake_nobody_retries_is_finished_by_the_deadline_sweep(running_stack):
    from orderpally.incidents import intake

    arm(intake.INTAKE_FAULTS, "before:acknowledgement")
    crashed = requests.post(running_stack.url("incidents") + "/incidents", json=incident_report(), timeout=30)
    assert crashed.status_code == 500
    assert mails_to(running_stack.mailbox, "crashed-intake@example.com") == []
    for _ in range(2):
        assert requests.post(running_stack.url("incident-deadlines"), timeout=30).status_code == 200
    wait_for(lambda: mails_to(running_stack.mailbox, "crashed-intake@example.com"))
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, "crashed-intake@example.com")) == 1


def _billing_case(stack):
    account = f"acct-{uuid.uuid4().hex[:8]}"
    data = invoice_of_700(account)

    def effect() -> bool:
        return billing.outstanding(clients.firestore_client(), account) == (700, "TWD")

    return billing.MESSAGE_TYPE, data, effect, 0


def _export_case(stack):
    from orderpally.lifecycle import export

    customer = create_customer()
    record = queued_export(customer.uid, datetime.now(UTC))

    def effect() -> bool:
        blobs = list(clients.storage_client().list_blobs(settings().exports_bucket, prefix=f"{customer.uid}/"))
        return len(blobs) == 1

    return export.MESSAGE_TYPE, {"export_id": record["export_id"], "account_id": customer.uid}, effect, 1


def _records_case(stack):
    from support.identities import browser_headers

    customer = create_customer()
    asked = requests.post(
        stack.url("account") + "/account/records-requests",
        json={"from": "2026-01-01", "to": "2027-12-31"},
        headers=browser_headers(customer),
        timeout=30,
    )
    request_id = asked.json()["request_id"]

    def effect() -> bool:
        blobs = list(clients.storage_client().list_blobs(settings().exports_bucket, prefix=f"{customer.uid}/"))
        return len(blobs) == 1

    from orderpally.records import service as records

    # The request's own publish delivers it once more: still one effect.
    return records.MESSAGE_TYPE, {"request_id": request_id, "account_id": customer.uid}, effect, 1


def _deletion_case(stack):
    from orderpally.lifecycle import deletion

    db = clients.firestore_client()
    account = f"twice-{uuid.uuid4().hex[:8]}"
    db.document(f"accounts/{account}").set({"kind": "consumer", "email": f"{account}@example.test"})
    for i in range(5):
        db.collection(f"accounts/{account}/audit_trail").add({"action": f"a{i}"})
    deletion.request_deletion(db, account, account, "customer request")

    def effect() -> bool:
        certificate = db.document(f"{deletion.CERTIFICATES}/{account}").get().to_dict() or {}
        return certificate.get("status") == "completed" and certificate["locations"]["audit_trail"]["counts"] == {
            "deleted": 5
        }

    return deletion.MESSAGE_TYPE, {"account_id": account}, effect, 0


def _fanout_case(stack):
    from orderpally.notices import fanout, service

    customers = [create_customer() for _ in range(3)]
    notice = notice_to_everyone("Twice")

    def effect() -> bool:
        recipients = sorted(str(m["To"]) for m in read_mailbox(stack.mailbox))
        return recipients == sorted(c.email for c in customers)

    return fanout.MESSAGE_TYPE, {"job_id": service.fanout_id(notice["id"], 1)}, effect, len(customers)


def _mail_batch_case(stack):
    from orderpally.messaging.requests import MESSAGE_TYPE, EmailBatch, Recipient

    customers = [create_customer() for _ in range(3)]
    batch = EmailBatch(
        template="termination_cancelled",
        recipients=[Recipient(idempotency_key=f"twice-{c.uid}", to_email=c.email, account_id=c.uid) for c in customers],
    )

    def effect() -> bool:
        recipients = sorted(str(m["To"]) for m in read_mailbox(stack.mailbox))
        return recipients == sorted(c.email for c in customers)

    return MESSAGE_TYPE, batch.model_dump(mode="json"), effect, len(customers)


def _heartbeat_case(stack):
    from orderpally.heartbeat import service as heartbeat

    beat = heartbeat.new_heartbeat(datetime.now(UTC), source=f"twice-{uuid.uuid4().hex[:6]}")

    def effect() -> bool:
        stored = clients.firestore_client().document("/".join(heartbeat.DOCUMENT)).get().to_dict() or {}
        return stored.get("source") == beat.source

    return heartbeat.MESSAGE_TYPE, beat.model_dump(mode="json"), effect, 0


@pytest.mark.parametrize(
    ("entry_point", "case"),
    [
        ("record_billing_event", _billing_case),
        ("build_content_export", _export_case),
        ("build_records", _records_case),
        ("run_account_deletion", _deletion_case),
        ("fan_out_notice", _fanout_case),
        ("send_notice_email", _mail_batch_case),
        ("record_heartbeat", _heartbeat_case),
    ],
)
def test_every_topic_function_has_one_effect_under_duplicate_and_concurrent_deliveries(
    running_stack, entry_point, case
):
    info = next(i for i in topic_functions(running_stack) if i.entry.entry_point == entry_point)
    message_type, data, effect, mails = case(running_stack)
    envelope = events.envelope(message_type, data)
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: post_event(info.url, envelope, "same-event", now).status_code, range(6)))
    # Deliveries that found another one in flight ask Pub/Sub to come back later (non-2xx): none fail otherwise.
    assert all(code < 300 or code in (500, 503) for code in answers), answers
    post_event(info.url, envelope, "same-event", now)  # a redelivery after it settled
    post_event(info.url, envelope, f"another-{uuid.uuid4().hex}", now)  # a duplicate publish
    assert wait_for(effect)
    if mails:
        wait_for(lambda: len(read_mailbox(running_stack.mailbox)) >= mails)
    time.sleep(2.0)
    assert effect()
    # Mail to this test's accounts only (the reset left no others): a slow mail from an earlier
    # test's build can land after the reset, addressed to an account that no longer exists.
    ours = {(snap.to_dict() or {}).get("email") for snap in clients.firestore_client().collection("accounts").stream()}
    assert len([m for m in read_mailbox(running_stack.mailbox) if str(m["To"]) in ours]) == mails


def announcement_cases(running_stack, customer) -> dict[str, tuple[str, str, dict, dict]]:
    """Per lifecycle action: (method, url, body, headers) of a call that commits a change, then announces it."""
    from support.identities import browser_headers, create_identity

    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    admin = create_identity(roles=["admin"])
    return {
        "termination": (
            "POST",
            running_stack.url("account") + "/account/termination",
            {"termination_date": tomorrow},
            browser_headers(customer),
        ),
        "suspension": (
            "POST",
            running_stack.url("staff") + f"/staff/accounts/{customer.uid}/suspension",
            {"code": "A", "reason": "Repeated policy violations in live streams"},
            browser_headers(admin),
        ),
    }


@pytest.mark.parametrize(
    ("case", "action", "template_subject"),
    [("termination", "termination.scheduled", "終止"), ("suspension", "account.suspended", "暫停")],
)
def test_a_lifecycle_change_crashed_before_its_announcement_keeps_its_audit_entry_and_mail(
    running_stack, case, action, template_subject
):
    from orderpally import audit, outbox
    from orderpally.messaging import requests as mail

    customer = create_customer()
    method, url, body, headers = announcement_cases(running_stack, customer)[case]
    arm(outbox.FAULTS, "after-commit")
    crashed = requests.request(method, url, json=body, headers=headers, timeout=30)
    assert crashed.status_code == 500
    assert wait_for(lambda: fired(outbox.FAULTS), timeout=30)

    # The change and both of its announcements committed together; neither went out yet.
    staged = staged_mails("account_id", customer.uid)
    assert len(staged) == 1
    chain = audit.account_chain(clients.firestore_client(), customer.uid)
    assert [s.get("action") for s in audit.pending(chain).stream()] == [action]
    time.sleep(1.0)
    assert mails_to(running_stack.mailbox, customer.email) == []

    # A reader of the trail links the entry; the redrive publishes the mail once it is stale.
    assert [entry["action"] for entry in audit.entries(clients.firestore_client(), customer.uid)].count(action) == 1
    fire = running_stack.url("archive-redrive")
    assert requests.post(fire, timeout=30).json()[mail.OUTBOX] == 0  # not stale yet: its own call may still send it
    make_stale(staged[0])
    assert requests.post(fire, timeout=30).json()[mail.OUTBOX] == 1
    assert requests.post(fire, timeout=30).json()[mail.OUTBOX] == 0
    mails = wait_for(lambda: mails_to(running_stack.mailbox, customer.email))
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, customer.email)) == 1
    assert template_subject in str(mails[0]["Subject"])
    assert [entry["action"] for entry in audit.entries(clients.firestore_client(), customer.uid)].count(action) == 1


def test_a_password_change_crashed_after_the_change_still_warns_the_owner_once(running_stack):
    from orderpally import outbox
    from orderpally.messaging import requests as mail
    from support.identities import PASSWORD, browser_headers, id_token

    customer = create_customer()
    arm(outbox.FAULTS, "after-password-change")
    new_password = "a different and long passphrase"
    crashed = requests.post(
        running_stack.url("auth") + "/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=browser_headers(customer),
        timeout=30,
    )
    assert crashed.status_code == 500
    assert wait_for(lambda: fired(outbox.FAULTS), timeout=30)
    assert id_token(customer.email, new_password)  # the change itself happened
    time.sleep(1.0)
    assert mails_to(running_stack.mailbox, customer.email) == []

    staged = staged_mails("account_id", customer.uid)
    assert [s.get("request")["template"] for s in staged] == ["password_changed"]
    make_stale(staged[0])
    assert requests.post(running_stack.url("archive-redrive"), timeout=30).json()[mail.OUTBOX] == 1
    wait_for(lambda: mails_to(running_stack.mailbox, customer.email))
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, customer.email)) == 1


def test_a_role_change_crashed_after_the_change_is_still_in_the_trail(running_stack):
    from firebase_admin import auth

    from orderpally import audit
    from orderpally.access import staff_roles
    from support.identities import browser_headers, create_identity

    admin, newcomer = create_identity(roles=["admin"]), create_identity()
    arm(staff_roles.FAULTS, "after-change")
    crashed = requests.put(
        running_stack.url("staff") + f"/staff/staff-roles/{newcomer.uid}",
        json={"roles": ["security"], "reason": "joins the security team"},
        headers=browser_headers(admin),
        timeout=30,
    )
    assert crashed.status_code == 500
    assert wait_for(lambda: fired(staff_roles.FAULTS), timeout=30)
    assert auth.get_user(newcomer.uid, app=clients.firebase_app()).custom_claims["roles"] == ["security"]
    (entry,) = audit.entries(clients.firestore_client(), newcomer.uid)
    assert entry["action"] == "staff.roles_change_requested"
    assert entry["details"] == {"roles": ["security"]}
    assert entry["actor"]["id"] == admin.uid


def test_a_staff_reply_crashed_after_its_commit_is_in_the_history_once_and_mailed_once(running_stack):
    from orderpally import outbox
    from orderpally.messaging import requests as mail
    from support.identities import browser_headers, create_identity

    security = create_identity(roles=["security"])
    contact = f"reply-crash-{uuid.uuid4().hex[:8]}@example.com"
    reported = requests.post(
        running_stack.url("incidents") + "/incidents",
        json={**incident_report(), "contact_email": contact},
        timeout=30,
    )
    reference = reported.json()["reference"]
    wait_for(lambda: mails_to(running_stack.mailbox, contact))  # the acknowledgement

    arm(outbox.FAULTS, "after-commit")
    crashed = requests.post(
        running_stack.url("staff") + f"/staff/incidents/{reference}/notes",
        json={"text": "We have taken the page down.", "visibility": "public"},
        headers=browser_headers(security),
        timeout=30,
    )
    assert crashed.status_code == 500
    assert wait_for(lambda: fired(outbox.FAULTS), timeout=30)
    assert history_actions(reference).count("incident.reply") == 1  # the reader links the pending entry

    staged = staged_mails("to_email", contact)
    assert [s.get("request")["template"] for s in staged] == ["incident_reply"]
    make_stale(staged[0])
    assert requests.post(running_stack.url("archive-redrive"), timeout=30).json()[mail.OUTBOX] == 1
    wait_for(lambda: len(mails_to(running_stack.mailbox, contact)) >= 2)
    time.sleep(2.0)
    assert len(mails_to(running_stack.mailbox, contact)) == 2  # the acknowledgement and the one reply
    assert history_actions(reference).count("incident.reply") == 1

"""The incidents' use cases called directly against the emulators, without HTTP: intake, triage,
replies and the deadline check, checked by what they store and the mails they request."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from orderpally import accounts, audit, clients, events, web
from orderpally.config import settings
from orderpally.incidents import intake, service, store
from orderpally.messaging.requests import TOPIC as EMAIL_TOPIC
from orderpally.messaging.requests import EmailRequest
from support import pubsub

pytestmark = pytest.mark.usefixtures("emulators")
NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
ADDRESS = "203.0.113.9"
STAFF = audit.Actor("staff", "sec-1", "security")
MAIL = pubsub.send_email()  # the requests reach the emulator's topic, where the tests read them


@pytest.fixture
def email_subscription():
    topic = events.topic_path(EMAIL_TOPIC)
    with contextlib.suppress(gexc.AlreadyExists):
        clients.publisher().create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    name = subscriber.subscription_path(settings().project_id, "incidents-service-test")
    with contextlib.suppress(gexc.NotFound):
        subscriber.delete_subscription(subscription=name)
    subscriber.create_subscription(name=name, topic=topic)
    yield lambda: drain(subscriber, name)
    subscriber.delete_subscription(subscription=name)


def drain(subscriber, name: str) -> list[EmailRequest]:
    received = []
    while True:
        response = subscriber.pull(subscription=name, max_messages=100, timeout=5)
        if not response.received_messages:
            return received
        for message in response.received_messages:
            received.append(EmailRequest.model_validate(json.loads(message.message.data)["data"]))
        subscriber.acknowledge(subscription=name, ack_ids=[m.ack_id for m in response.received_messages])


def report(**overrides) -> service.Report:
    body = {
        "category": "suspected_data_leak",
        "description": "Orders of my shop appear on a public paste site.",
        "language": "en",
        **overrides,
    }
    return service.Report.model_validate(body)


def stored(reference: str) -> dict:
    return clients.firestore_client().collection(store.INCIDENTS).document(reference).get().to_dict() or {}


def actions(reference: str) -> list[str]:
    return [e["action"] for e in audit.chain_page(service.chain(clients.firestore_client(), reference), 100)]


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def test_a_signed_in_report_is_stored_acknowledged_and_pages_the_on_call_once(email_subscription):
    db = clients.firestore_client()
    accounts.create(db, "owner-1", {"kind": "store", "status": "active", "email": "owner@example.com"})

    done = intake.receive(db, MAIL, report(category="account_compromise"), "owner-1", ADDRESS, "key-signed-in-1", NOW)

    assert not done.duplicate
    incident = stored(done.reference)
    assert incident["reporter_account_id"] == "owner-1"
    assert incident["contact_email"] == "owner@example.com"
    assert incident["confirmed"] is True
    assert incident["severity"] == "critical"
    assert incident["intake_pending"] == []
    assert incident["paged_at"] is not None
    assert sorted(actions(done.reference)) == ["incident.paged", "incident.received"]
    trail = [e for e in audit.entries(clients.firestore_client(), "owner-1", 20) if e["action"] == "incident.reported"]
    assert [e["details"]["reference"] for e in trail] == [done.reference]
    mails = {(m.template, m.to_email) for m in email_subscription()}
    assert mails == {("incident_received", "owner@example.com"), ("incident_page", settings().security_oncall_email)}

    # The same key again: the first report, nothing new stored or recorded.
    again = intake.receive(db, MAIL, report(category="account_compromise"), "owner-1", ADDRESS, "key-signed-in-1", NOW)
    assert again.duplicate
    assert again.reference == done.reference
    assert [snap.id for snap in db.collection(store.INCIDENTS).stream()] == [done.reference]
    assert sorted(actions(done.reference)) == ["incident.paged", "incident.received"]
    with pytest.raises(web.Problem) as reused:
        intake.receive(db, MAIL, report(category="other"), "owner-1", ADDRESS, "key-signed-in-1", NOW)
    assert (reused.value.status, reused.value.slug) == (422, "idempotency-key-reused")


def test_an_anonymous_report_waits_for_its_confirmation_before_the_page(email_subscription):
    db = clients.firestore_client()
    with pytest.raises(web.Problem) as no_contact:
        intake.receive(db, MAIL, report(), None, ADDRESS, None, NOW)
    assert (no_contact.value.status, no_contact.value.slug, no_contact.value.title) == (
        422,
        "contact-required",
        "Invalid report",
    )

    done = intake.receive(db, MAIL, report(contact_email="Anon@Example.com"), None, ADDRESS, None, NOW)

    incident = stored(done.reference)
    assert incident["confirmed"] is False
    assert incident["contact_email"] == "anon@example.com"
    assert incident["reporter_account_id"] is None
    assert incident["paged_at"] is None
    (ack,) = email_subscription()
    assert (ack.template, ack.to_email) == ("incident_received", "anon@example.com")
    with pytest.raises(web.Problem) as wrong:
        service.confirm(db, done.reference, "not-the-token-" * 3, NOW)
    assert (wrong.value.status, wrong.value.slug) == (404, "incident-not-found")
    assert stored(done.reference)["confirmed"] is False

    confirmed, now_confirmed = service.confirm(db, done.reference, token_of(ack.data["confirm_link"]), NOW)
    intake.page_on_call(db, MAIL, done.reference, confirmed, NOW)

    assert now_confirmed is True
    assert stored(done.reference)["confirmed"] is True
    assert stored(done.reference)["paged_at"] is not None
    assert [m.template for m in email_subscription()] == ["incident_page"]
    assert service.reporter_may_read(stored(done.reference), None, token_of(ack.data["status_link"]))
    _, again = service.confirm(db, done.reference, token_of(ack.data["confirm_link"]), NOW)
    assert again is False
    assert actions(done.reference).count("incident.confirmed") == 1


def test_staff_cannot_move_a_closed_incident_back_into_investigation():
    db = clients.firestore_client()
    reporter = service.Reporter("owner-2", "owner2@example.com", ADDRESS)
    reference = service.submit(db, report(category="other"), reporter, None, intake.table(), NOW).reference
    later = NOW + timedelta(hours=2)

    closed = service.triage(db, reference, service.Triage(state="not_an_issue"), STAFF, intake.table(), later)
    assert closed["state"] == "not_an_issue"
    with pytest.raises(web.Problem) as refused:
        service.triage(db, reference, service.Triage(state="investigating"), STAFF, intake.table(), later)

    assert (refused.value.status, refused.value.slug, refused.value.title) == (
        409,
        "incident-transition",
        "Not possible now",
    )
    assert (
        refused.value.detail == "cannot move from not_an_issue to investigating; allowed: none: the incident is closed"
    )
    incident = stored(reference)
    assert incident["state"] == "not_an_issue"
    assert incident["resolved_at"] == later
    assert incident["first_responded_at"] == later
    assert actions(reference).count("incident.triaged") == 1


def test_a_staff_reply_mails_the_reporter_a_status_link_of_its_own(email_subscription):
    db = clients.firestore_client()
    reporter = service.Reporter(None, None, ADDRESS)
    reference = service.submit(
        db, report(contact_email="anon@example.com"), reporter, None, intake.table(), NOW
    ).reference
    replied_at = NOW + timedelta(minutes=30)

    internal = service.Note(text="Looks like a scraper; checking logs.", visibility="internal")
    service.add_note(db, reference, internal, STAFF, replied_at, mail_reporter=MAIL)
    public = service.Note(text="Thank you, we have removed the paste.", visibility="public")
    service.add_note(db, reference, public, STAFF, replied_at, mail_reporter=MAIL)

    (reply,) = email_subscription()
    assert (reply.template, reply.to_email) == ("incident_reply", "anon@example.com")
    assert reply.data["text"] == "Thank you, we have removed the paste."
    incident = stored(reference)
    assert incident["first_responded_at"] == replied_at
    assert len(incident["status_token_hashes"]) == 2
    assert service.reporter_may_read(incident, None, token_of(reply.data["status_link"]))
    assert [r["text"] for r in service.public_replies(db, reference)] == ["Thank you, we have removed the paste."]
    assert sorted(actions(reference)) == ["incident.note", "incident.reply"]

    service.triage(db, reference, service.Triage(state="not_an_issue"), STAFF, intake.table(), replied_at)
    with pytest.raises(web.Problem) as closed:
        service.add_note(db, reference, public, STAFF, replied_at, mail_reporter=MAIL)
    assert (closed.value.status, closed.value.slug) == (409, "incident-closed")
    assert email_subscription() == []


def test_the_deadline_check_finishes_a_stalled_intake_and_alerts_on_the_missed_deadline(email_subscription):
    db = clients.firestore_client()
    long_ago = NOW - timedelta(days=2)
    reporter = service.Reporter(None, None, ADDRESS)
    # Stored, but the process died before any intake step: its lease ran out long ago.
    stalled = service.submit(
        db, report(category="other", contact_email="a@example.com"), reporter, None, intake.table(), long_ago
    )
    # Stored a moment ago by an intake that is still running: its lease is live.
    running = service.submit(
        db, report(category="other", contact_email="b@example.com"), reporter, None, intake.table(), NOW
    )

    assert intake.check_deadlines(db, MAIL, NOW) == {"alerts": 1}

    assert stored(stalled.reference)["intake_pending"] == []
    assert actions(stalled.reference) == ["incident.received"]
    queued = running.incident["intake_pending"]  # every step this report needs, none done
    assert queued == ["history", "acknowledgement"]
    assert stored(running.reference)["intake_pending"] == queued
    assert actions(running.reference) == []
    # Nor does a retry take over while the running intake's lease is live.
    assert intake.resume_intake(db, MAIL, running.reference, None, NOW) is False
    assert stored(running.reference)["intake_pending"] == queued
    mails = email_subscription()
    assert sorted((m.template, m.to_email) for m in mails) == [
        ("incident_deadline", settings().security_oncall_email),
        ("incident_received", "a@example.com"),
    ]
    (alert,) = [m for m in mails if m.template == "incident_deadline"]
    assert (alert.data["reference"], alert.data["deadline"], alert.data["kind"]) == (
        stalled.reference,
        "first_response",
        "overdue",
    )

    # Once a staff reply is on record, the first-response deadline is met: nothing to alert.
    note = service.Note(text="We are looking into it.", visibility="public")
    service.add_note(db, stalled.reference, note, STAFF, NOW)
    assert intake.check_deadlines(db, MAIL, NOW) == {"alerts": 0}
    assert stored(stalled.reference)["intake_pending"] == []
    assert actions(stalled.reference).count("incident.received") == 1


def test_uploads_to_one_report_at_once_are_numbered_in_turn_and_only_the_extra_ones_refused():
    """More files at once than a report takes: each is numbered or refused as too many (409),
    none fails on contention (uploads ran transactions on the one report until they gave up)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from orderpally.incidents import rules

    db = clients.firestore_client()
    reporter = service.Reporter("owner-9", "owner9@example.com", ADDRESS)
    reference = service.submit(db, report(category="other"), reporter, None, intake.table(), NOW).reference
    files = service.Files(clients.storage_client().bucket(settings().attachments_bucket), {})
    actor = audit.Actor("customer", "owner-9")
    uploads = rules.MAX_ATTACHMENTS + 3
    start = threading.Barrier(uploads)

    def upload(i: int) -> int | str:
        start.wait()
        try:
            return service.attach_file(db, files, reference, stored(reference), actor, "text/plain", b"note %d" % i)[0]
        except web.Problem as refused:
            return refused.slug

    with ThreadPoolExecutor(uploads) as pool:
        outcomes = list(pool.map(upload, range(uploads)))
    assert sorted(o for o in outcomes if isinstance(o, int)) == list(range(1, rules.MAX_ATTACHMENTS + 1))
    assert [o for o in outcomes if not isinstance(o, int)] == ["too-many-attachments"] * 3
    kept = stored(reference)["attachments"]
    objects = clients.storage_client().list_blobs(settings().attachments_bucket, prefix="owner-9/")
    assert sorted(o.name for o in objects) == sorted(entry["object"] for entry in kept)  # the refused are gone

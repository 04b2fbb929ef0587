"""The trust report's use cases against the emulators: facts made by the capabilities' own use
cases (a sign-in, staff reads with reasons, API keys, a legal hold, a termination request,
incidents, notices, snapshots) each appear in the report, and what staff keep to themselves
(who they are, their addresses, their notes) does not."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc

from orderpally import accounts, audit, clients, events
from orderpally.access import api_keys
from orderpally.access import http as access_http
from orderpally.access import service as access
from orderpally.access.principal import Principal
from orderpally.backups import exporters
from orderpally.backups import rules as backup_rules
from orderpally.backups import service as backups
from orderpally.config import settings
from orderpally.incidents import intake
from orderpally.incidents import service as incidents
from orderpally.lifecycle import data_map
from orderpally.lifecycle import export as lifecycle_export
from orderpally.lifecycle import rules as lifecycle_rules
from orderpally.lifecycle import service as lifecycle
from orderpally.notices import rules as notice_rules
from orderpally.notices import service as notices
from orderpally.records import service as records
from orderpally.trust import rules, service
from support import pubsub
from support.identities import PASSWORD, create_identity

pytestmark = pytest.mark.usefixtures("emulators")

CUSTOMER_ADDRESS = "203.0.113.50"
SUPPORT = Principal(kind="staff", account_id="staff-support-7k2m", roles=frozenset({"support"}))
SUPPORT_ADDRESS = "198.51.100.77"
ADMIN = audit.Actor("staff", "staff-admin-q9tx", "admin")
ADMIN_ADDRESS = "198.51.100.78"
HOLD_NOTE = "internal: the prosecutor asked us not to tell anyone why"
HOLD_BASIS = "Taipei District Court order 113-Sheng-42"
ASSIGNEE = "staff-security-4hrd"
KMS_KEY = "projects/p/locations/asia-east1/keyRings/orderpally-data/cryptoKeys/orderpally-exports"


def deployment(**overrides) -> rules.Deployment:
    cfg = settings()
    base = rules.Deployment(
        region=cfg.region,
        buckets={"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket, "backups": cfg.backups_bucket},
        encryption_at_rest={},
        backup_retention_days=7,
        session_lifetime=timedelta(seconds=cfg.session_lifetime_seconds),
    )
    return dataclasses.replace(base, **overrides)


def sources(**overrides) -> service.Sources:
    return service.Sources(
        db=clients.firestore_client(), auth_app=clients.firebase_app(), deployment=deployment(**overrides)
    )


def access_ports() -> access.Ports:
    return dataclasses.replace(access_http.ports(), publish_mail=lambda notice: None)


def new_customer(created_at: datetime):
    """A customer as sign-up leaves one: a Firebase user with a password and the account document."""
    identity = create_identity()
    accounts.create(
        clients.firestore_client(),
        identity.uid,
        {
            "kind": "store",
            "display_name": "Dora's shop",
            "email": identity.email,
            "language": "en",
            "status": "active",
            "plan": None,
            "features": [],
            "created_at": created_at,
        },
    )
    return identity


def lifecycle_effects() -> lifecycle.Effects:
    return lifecycle.Effects(
        db=clients.firestore_client(),
        auth_app=clients.firebase_app(),
        send_email=lambda notice: None,
        publish_deletion=lambda account_id: None,
        public_base_url="https://api.orderpally.example",
    )


def notice_draft(affects: dict, now: datetime, title: str) -> notices.NoticeDraft:
    effective = notice_rules.add_one_month(notice_rules.taipei_date(now))
    return notices.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {"zh-TW": {"title": f"{title}（中文）", "body": "內容"}, "en": {"title": title, "body": "Body"}},
            "affects": affects,
            "effective_date": effective.isoformat(),
        }
    )


@pytest.fixture
def archive_topics() -> None:
    """The topics an export and a records request publish their build to (this tier starts no stack)."""
    for topic in (lifecycle_export.TOPIC, records.TOPIC):
        with contextlib.suppress(gexc.AlreadyExists):
            clients.publisher().create_topic(name=events.topic_path(topic))


def report_of(the_report: dict) -> str:
    return json.dumps(the_report, ensure_ascii=False)


def test_every_fact_made_by_the_capabilities_appears_and_staff_secrets_do_not(tmp_path, archive_topics):
    db = clients.firestore_client()
    now = datetime.now(UTC)
    customer = new_customer(created_at=now - timedelta(days=2))
    uid = customer.uid
    me = Principal(kind="customer", account_id=uid, email_verified=True)

    # A sign-in, keys (one used, one revoked), a staff read with its reason.
    access.sign_in(access_ports(), customer.email, PASSWORD, CUSTOMER_ADDRESS, None)
    used, key = access.issue_key(access_ports(), me, "shop sync", ["audit:read"], 30, CUSTOMER_ADDRESS)
    api_keys.principal(db, key, settings().secret("API_KEY_PEPPER"), "203.0.113.51", datetime.now(UTC))
    revoked, _ = access.issue_key(access_ports(), me, "old laptop", ["export:create"], 30, CUSTOMER_ADDRESS)
    access.revoke_key(access_ports(), me, revoked["id"], CUSTOMER_ADDRESS)
    access.staff_read(db, SUPPORT, uid, "account", "Customer asked about an order", SUPPORT_ADDRESS)

    # A legal hold, a termination the customer asked for, reports (one still open), notices.
    lifecycle.place_hold(
        db,
        uid,
        location_ids=["orders_as_store"],
        reason=HOLD_NOTE,
        authority=HOLD_BASIS,
        actor=ADMIN,
        client_address=ADMIN_ADDRESS,
        now=now,
    )
    last_day = lifecycle_rules.taipei_today(now) + timedelta(days=10)
    lifecycle.request_termination(
        lifecycle_effects(),
        uid,
        requested=last_day,
        session_issued_at=int(now.timestamp()),
        actor=audit.Actor("customer", uid),
        client_address=CUSTOMER_ADDRESS,
        now=now,
    )
    reporter = incidents.Reporter(uid, customer.email, CUSTOMER_ADDRESS)
    report = incidents.Report.model_validate(
        {"category": "account_compromise", "description": "Someone signed in from abroad.", "language": "en"}
    )
    still_open = incidents.submit(db, report, reporter, None, intake.table(), now).reference
    incidents.triage(db, still_open, incidents.Triage(state="triaged", assignee=ASSIGNEE), ADMIN, intake.table(), now)
    closed = incidents.submit(db, report, reporter, None, intake.table(), now).reference
    incidents.triage(db, closed, incidents.Triage(state="not_an_issue"), ADMIN, intake.table(), now)
    export = lifecycle.request_export(
        db, pubsub.publisher(), uid, actor=audit.Actor("customer", uid), client_address=CUSTOMER_ADDRESS, now=now
    )
    wanted = records.RecordsRange.model_validate({"from": "2026-01-01", "to": "2026-06-30"})
    records_request = records.request(
        db, pubsub.publisher(), uid, wanted, client_address=CUSTOMER_ADDRESS, now=now, valid_days=7
    )
    for_everyone = notices.create_notice(db, notice_draft({"all": True}, now, "Checkout update"), "staff-n", now)
    for_others = notices.create_notice(db, notice_draft({"plans": ["enterprise"]}, now, "Enterprise only"), "s", now)

    # Snapshots: one before the account existed, one after; the newer holds its data.
    exporter = exporters.EmulatorExporter(os.environ["FIRESTORE_EMULATOR_HOST"], settings().project_id, tmp_path)
    before = backup_rules.slot_for(now - timedelta(days=3), now)
    after = backup_rules.slot_for(now - timedelta(days=1), now)
    backups.take_snapshot(db, exporter, before, now - timedelta(days=3))
    backups.take_snapshot(db, exporter, after, now - timedelta(days=1))

    found = service.for_customer(
        sources(encryption_at_rest={"exports": {"key": KMS_KEY, "rotation_period": "7776000s"}}), uid
    )
    text = report_of(found)

    # Where the data lives: every data-map location, resolved for this account, in Taiwan.
    locations = {location["id"]: location for location in found["data_locations"]}
    assert list(locations) == [location.id for location in data_map.load().locations]
    assert locations["account_profile"]["path"] == f"accounts/{uid}"
    assert locations["orders_as_store"]["collection"] == "orders"
    assert locations["orders_as_store"]["owner_field"] == "store_id"
    assert locations["exports"]["bucket"] == settings().exports_bucket
    assert locations["exports"]["prefix"] == f"{uid}/"
    assert {location["region"] for location in found["data_locations"]} == {"asia-east1"}
    assert locations["exports"]["encryption"] == {
        "managed_by": "customer",
        "key": KMS_KEY,
        "rotation_period_seconds": 7776000,
        "rotation_period_days": 90,
    }
    # What the settings do not name is not claimed to be anyone's key.
    assert locations["account_profile"]["encryption"] == {"managed_by": "not_configured"}

    # The last snapshot holding the account's data, and until when it is kept.
    snapshot = found["backups"]["last_snapshot"]
    assert snapshot["slot"] == after
    # The bucket keeps each object 7 days from when it was written, which the export started.
    assert snapshot["kept_until"] == (now - timedelta(days=1) + timedelta(days=7)).isoformat()
    assert snapshot["taken_at"] == backup_rules.slot_time(after).isoformat()
    assert "verified_at" in snapshot

    # Staff access: role, reason and time; not who, nor from where.
    [read] = found["staff_accesses"]
    assert (read["role"], read["reason"], read["what"]) == ("support", "Customer asked about an order", "account")
    assert SUPPORT.account_id not in text
    assert SUPPORT_ADDRESS not in text

    # Sessions: the sign-in, whose last use is not recorded; keys that still work, with their last use.
    [session] = found["sessions"]["open"]
    assert (session["method"], session["client_address"]) == ("password", CUSTOMER_ADDRESS)
    assert found["sessions"]["last_use_recorded"] is False
    assert found["sessions"]["ended_everywhere_at"] is None  # creating the user ended nothing
    [active] = found["api_keys"]
    assert (active["id"], active["name"], active["scopes"]) == (used["id"], "shop sync", ["audit:read"])
    assert active["last_used_at"] is not None
    assert active["last_used_address"] == "203.0.113.51"

    # The hold: how many, since when, the basis; never the staff note or who placed it.
    holds = found["legal_holds"]
    assert holds["count"] == 1
    assert holds["holds"] == [{"placed_at": now.isoformat(), "basis": HOLD_BASIS, "locations": ["orders_as_store"]}]
    assert holds["since"] == now.isoformat()
    assert HOLD_NOTE not in text
    assert ADMIN.id not in text
    assert ADMIN_ADDRESS not in text

    # The pending termination, and the retention counted from its day.
    termination = found["requests"]["termination"]
    assert termination["pending"] is True
    assert termination["terminate_at"] == lifecycle_rules.end_of_day(last_day).isoformat()
    day = lifecycle_rules.end_of_day(last_day).astimezone(UTC).date()
    assert found["retention_at_termination"]["counted_from_day"] == day.isoformat()
    classes = {entry["class"]: entry for entry in found["retention_at_termination"]["classes"]}
    vouchers = classes["accounting_voucher"]
    assert vouchers["purge_date_latest"] == lifecycle_rules.retained_until(day, 5, True).isoformat()
    assert vouchers["legal_basis"].startswith("商業會計法第38條")
    assert classes["security_record"]["purge_date_latest"] == lifecycle_rules.retained_until(day, 5, False).isoformat()
    assert "orders_as_store" in vouchers["locations"]
    assert classes["delete"]["deleted_from"] == day.isoformat()
    assert found["deletion_certificate"] is None
    # The export and records request, queued, with their dates.
    assert found["requests"]["export"] == {
        "id": export["export_id"],
        "status": "queued",
        "pending": True,
        "requested_at": now.isoformat(),
        "expires_at": export["expires_at"].isoformat(),
    }
    asked = found["requests"]["records"]
    assert (asked["id"], asked["pending"], asked["from"], asked["to"]) == (
        records_request["request_id"],
        True,
        "2026-01-01",
        "2026-06-30",
    )

    # The open report, without its texts or who on the staff has it; the closed one not at all.
    [open_report] = found["incidents"]
    assert (open_report["reference"], open_report["state"]) == (still_open, "triaged")
    assert closed not in text
    assert ASSIGNEE not in text
    assert customer.email not in text

    # Notices addressed to the account, not those for another plan.
    assert [notice["id"] for notice in found["notices"]] == [for_everyone["id"]]
    assert found["notices"][0]["title"] == {"zh-TW": "Checkout update（中文）", "en": "Checkout update"}
    assert for_others["id"] not in text


def test_a_staff_view_is_recorded_with_its_reason_before_it_leaves():
    now = datetime.now(UTC)
    customer = new_customer(created_at=now)
    security = audit.Actor("staff", "staff-security-m2q9", "security")
    found = service.for_staff(
        sources(), customer.uid, actor=security, reason="Checking a breach report", client_address="198.51.100.90"
    )
    assert found["for_staff"] is True
    # The view it answers already lists itself: the read was written first.
    assert [(r["role"], r["reason"], r["what"]) for r in found["staff_accesses"]] == [
        ("security", "Checking a breach report", "trust_report")
    ]
    [entry] = [e for e in audit.entries(clients.firestore_client(), customer.uid) if e["action"] == "staff.read"]
    assert entry["actor"] == {"kind": "staff", "id": security.id, "role": "security"}
    assert entry["reason"] == "Checking a breach report"
    assert "staff-security-m2q9" not in report_of(found)


def test_a_staff_view_of_an_unknown_account_is_not_found_and_records_nothing():
    from orderpally import web

    with pytest.raises(web.Problem) as refused:
        service.for_staff(
            sources(), "no-such-account", actor=ADMIN, reason="Looking for a lost account", client_address=None
        )
    assert refused.value.status == 404
    assert audit.entries(clients.firestore_client(), "no-such-account") == []


def test_sessions_ended_everywhere_are_not_listed_as_open():
    now = datetime.now(UTC)
    customer = new_customer(created_at=now)
    ports = access_ports()
    access.sign_in(ports, customer.email, PASSWORD, CUSTOMER_ADDRESS, None)
    signed_in = access.sign_in(ports, customer.email, PASSWORD, CUSTOMER_ADDRESS, None)
    me = Principal(kind="customer", account_id=customer.uid, email_verified=True)
    access.sign_out(ports, me, signed_in.cookie, everywhere=True, address=CUSTOMER_ADDRESS)
    found = service.for_customer(sources(), customer.uid)
    assert found["sessions"]["open"] == []
    assert found["sessions"]["ended_everywhere_at"] is not None


def test_after_the_deletion_staff_see_the_certificate_and_their_read_is_kept_beside_it(tmp_path):
    from orderpally.lifecycle import deletion

    db = clients.firestore_client()
    now = datetime.now(UTC)
    customer = new_customer(created_at=now - timedelta(days=2))
    exporter = exporters.EmulatorExporter(os.environ["FIRESTORE_EMULATOR_HOST"], settings().project_id, tmp_path)
    held_it = backup_rules.slot_for(now - timedelta(hours=1), now)
    backups.take_snapshot(db, exporter, held_it, now - timedelta(hours=1))
    lifecycle.request_termination(
        lifecycle_effects(),
        customer.uid,
        requested=None,  # at once: access ends, the deletion starts
        session_issued_at=int(now.timestamp()),
        actor=audit.Actor("customer", customer.uid),
        client_address=CUSTOMER_ADDRESS,
        now=now,
    )
    ports = deletion.Ports(
        db=db,
        storage=clients.storage_client(),
        buckets={"exports": settings().exports_bucket, "attachments": settings().attachments_bucket},
        pseudonym_key=settings().pseudonym_key,
        continue_later=lambda account_id: None,
        sleep=lambda seconds: None,
    )
    assert deletion.run_job(ports, data_map.load(), customer.uid) == "completed"
    # Taken after the certificate: it holds nothing of the account any more.
    later = datetime.now(UTC) + timedelta(minutes=2)
    backups.take_snapshot(db, exporter, backup_rules.slot_for(later, later), later)

    found = service.for_staff(
        sources(), customer.uid, actor=ADMIN, reason="Confirming the deletion", client_address=ADMIN_ADDRESS
    )
    assert found["account"]["status"] == "deleted"
    assert found["deletion_certificate"]["status"] == "completed"
    assert found["requests"]["termination"]["status"] == "executed"
    assert found["backups"]["last_snapshot"]["slot"] == held_it
    # The account's trail went with it: the read is kept beside the certificate, and shown.
    [read] = found["staff_accesses"]
    assert (read["role"], read["reason"], read["what"]) == ("admin", "Confirming the deletion", "trust_report")
    assert ADMIN.id not in report_of(found)
    assert ADMIN_ADDRESS not in report_of(found)

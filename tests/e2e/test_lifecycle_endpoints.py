"""Termination, suspension and legal holds over HTTP, as the frontend and staff tools call them."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from orderpally import clients
from orderpally.access import api_keys
from orderpally.config import settings
from orderpally.lifecycle import deletion
from support.identities import browser_headers, create_customer, create_identity
from support.waiting import mails_to, wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def account(uid: str) -> dict:
    return clients.firestore_client().document(f"accounts/{uid}").get().to_dict()


def audit_actions(uid: str) -> list[str]:
    return [
        d.to_dict()["action"] for d in clients.firestore_client().collection(f"accounts/{uid}/audit_trail").stream()
    ]


def test_a_customer_schedules_and_cancels_their_termination(running_stack):
    url = running_stack.url("account") + "/account/termination"
    alice = create_customer()
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    scheduled = requests.post(url, json={"termination_date": tomorrow}, headers=browser_headers(alice), timeout=10)
    assert scheduled.status_code == 202, scheduled.text
    assert scheduled.json()["status"] == "scheduled"
    assert account(alice.uid)["status"] == "terminating"
    current = requests.get(url, headers={"Cookie": browser_headers(alice)["Cookie"]}, timeout=10).json()
    assert current["termination"]["basis"] == "customer_convenience"

    assert requests.delete(url, headers=browser_headers(alice), timeout=10).status_code == 204
    assert account(alice.uid)["status"] == "active"
    assert {"termination.scheduled", "termination.cancelled"} <= set(audit_actions(alice.uid))
    again = requests.delete(url, headers=browser_headers(alice), timeout=10)
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"termination_date": "2001-01-01"}, 422, "termination_date"),
        ({"termination_date": "soon"}, 422, "termination_date"),
        ({}, 422, "termination_date"),
        ({"termination_date": "immediately", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_termination_requests_are_refused_and_change_nothing(running_stack, body, status, field):
    alice = create_customer()
    response = requests.post(
        running_stack.url("account") + "/account/termination", json=body, headers=browser_headers(alice), timeout=10
    )
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["field"] == field
    assert account(alice.uid)["status"] == "active"


def test_termination_needs_a_verified_browser_session_with_csrf(running_stack):
    url = running_stack.url("account") + "/account/termination"
    body = {"termination_date": "immediately"}
    unverified = create_customer(verified=False)
    assert requests.post(url, json=body, headers=browser_headers(unverified), timeout=10).status_code == 403
    alice = create_customer()
    no_token = {k: v for k, v in browser_headers(alice).items() if k != "X-CSRF-Token"}
    assert requests.post(url, json=body, headers=no_token, timeout=10).status_code == 403
    foreign = {**browser_headers(alice), "Origin": "https://evil.example"}
    assert requests.post(url, json=body, headers=foreign, timeout=10).status_code == 403
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert account(alice.uid)["status"] == "active"


def api_key(account_id: str) -> str:
    db = clients.firestore_client()
    now = datetime.now(UTC)
    pepper = settings().secret("API_KEY_PEPPER")
    return api_keys.create(db, account_id, "test", list(api_keys.SCOPES), now + timedelta(days=1), pepper, now)[1]


def test_an_immediate_termination_ends_access_and_deletes_the_account(running_stack):
    alice = create_customer()
    key = api_key(alice.uid)
    clients.firestore_client().collection(f"accounts/{alice.uid}/audit_trail").add({"action": "old"})
    url = running_stack.url("account") + "/account/termination"
    assert requests.post(url, json={"termination_date": "immediately"}, headers=browser_headers(alice), timeout=10).ok

    # "At once": before any schedule runs, the session and the key no longer work.
    from firebase_admin import auth

    assert auth.get_user(alice.uid, app=clients.firebase_app()).disabled
    assert requests.get(url, headers={"Cookie": browser_headers(alice)["Cookie"]}, timeout=10).status_code == 401
    trail = running_stack.url("account") + "/account/audit-trail"
    assert requests.get(trail, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 401

    certificate = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{alice.uid}")
    wait_for(lambda: certificate.get().exists and certificate.get().to_dict()["status"] == "completed")
    assert not clients.firestore_client().document(f"accounts/{alice.uid}").get().exists

    # The schedule finds nothing left to end, and deletes the user once the certificate is complete.
    second = requests.post(running_stack.url("due-terminations") + "/", json={}, timeout=60).json()
    assert second == {"executed": 0, "users_deleted": 1}
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user(alice.uid, app=clients.firebase_app())


def test_a_deleted_customers_trail_does_not_come_back(running_stack):
    alice = create_customer()
    url = running_stack.url("account") + "/account/termination"
    assert requests.post(url, json={"termination_date": "immediately"}, headers=browser_headers(alice), timeout=10).ok
    certificate = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{alice.uid}")
    wait_for(lambda: certificate.get().exists and certificate.get().to_dict()["status"] == "completed")
    mails_before = len(mails_to(running_stack.mailbox, alice.email))

    # Before the schedule deletes the user, someone tries the deleted address.
    origin = {"Origin": browser_headers(alice)["Origin"]}
    sign_in = running_stack.url("auth") + "/auth/sign-in"
    wrong = {"email": alice.email, "password": "not the password at all"}
    assert requests.post(sign_in, json=wrong, headers=origin, timeout=10).status_code == 401
    reset = running_stack.url("auth") + "/auth/password-reset"
    assert requests.post(reset, json={"email": alice.email}, headers=origin, timeout=10).status_code == 202
    time.sleep(1.0)
    db = clients.firestore_client()
    assert list(db.collection(f"accounts/{alice.uid}/audit_trail").stream()) == []
    assert list(db.collection(f"audit_chains/{alice.uid}/audit_pending").stream()) == []
    assert not db.document(f"audit_chains/{alice.uid}").get().exists
    assert len(mails_to(running_stack.mailbox, alice.email)) == mails_before


def test_a_customer_cannot_undo_or_replace_a_termination_orderpally_started(running_stack):
    alice = create_customer()
    admin = create_identity(roles=["admin"])
    own = running_stack.url("account") + "/account/termination"
    staff_termination = staff_url(running_stack, f"/accounts/{alice.uid}/termination")
    body = {"basis": "breach_cure_period", "reason": "Unpaid invoices for three months", "cure_period_days": 30}
    assert requests.post(staff_termination, json=body, headers=browser_headers(admin), timeout=10).status_code == 202
    before = clients.firestore_client().document(f"terminations/{alice.uid}").get().to_dict()

    cancelled = requests.delete(own, headers=browser_headers(alice), timeout=10)
    later = (date.today() + timedelta(days=60)).isoformat()
    replaced = requests.post(own, json={"termination_date": later}, headers=browser_headers(alice), timeout=10)
    for refused in (cancelled, replaced):
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith("termination-by-orderpally")
    after = clients.firestore_client().document(f"terminations/{alice.uid}").get().to_dict()
    assert (after["basis"], after["terminate_at"], after["status"]) == (
        before["basis"],
        before["terminate_at"],
        "scheduled",
    )

    # Staff undo it only with a reason, which the customer's trail keeps.
    cancel = staff_url(running_stack, f"/accounts/{alice.uid}/termination/cancellation")
    assert requests.post(cancel, json={}, headers=browser_headers(admin), timeout=10).status_code == 422
    assert requests.post(cancel, json={"reason": "x"}, headers=browser_headers(alice), timeout=10).status_code == 403
    reason = "Paid in full on 1 December"
    assert requests.post(cancel, json={"reason": reason}, headers=browser_headers(admin), timeout=10).status_code == 204
    entries = [d.to_dict() for d in clients.firestore_client().collection(f"accounts/{alice.uid}/audit_trail").stream()]
    assert any(e["action"] == "termination.cancelled" and e.get("reason") == reason for e in entries)
    assert account(alice.uid)["status"] == "active"


def test_a_termination_scheduled_on_a_suspended_account_keeps_the_suspension(running_stack):
    alice = create_customer()
    key = api_key(alice.uid)
    admin = create_identity(roles=["admin"])
    suspension = staff_url(running_stack, f"/accounts/{alice.uid}/suspension")
    suspend = {"code": "A", "reason": "Repeated policy violations in live streams"}
    assert requests.post(suspension, json=suspend, headers=browser_headers(admin), timeout=10).status_code == 204
    terminate = {"basis": "company_convenience", "reason": "The store's contract is not renewed"}
    termination = staff_url(running_stack, f"/accounts/{alice.uid}/termination")
    assert requests.post(termination, json=terminate, headers=browser_headers(admin), timeout=10).status_code == 202

    assert account(alice.uid)["status"] == "suspended"
    trail = running_stack.url("account") + "/account/audit-trail"
    assert requests.get(trail, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code in (401, 403)
    # Staff can still lift the suspension; the termination stays scheduled.
    assert requests.delete(suspension, headers=browser_headers(admin), timeout=10).status_code == 204
    assert account(alice.uid)["status"] == "terminating"


def test_a_termination_scheduled_again_for_the_same_date_is_announced_again(running_stack):
    alice = create_customer()
    url = running_stack.url("account") + "/account/termination"
    day = {"termination_date": (date.today() + timedelta(days=10)).isoformat()}
    for _ in range(2):
        assert requests.post(url, json=day, headers=browser_headers(alice), timeout=10).status_code == 202
        assert requests.delete(url, headers=browser_headers(alice), timeout=10).status_code == 204
    assert requests.post(url, json=day, headers=browser_headers(alice), timeout=10).status_code == 202

    wait_for(lambda: len(mails_to(running_stack.mailbox, alice.email)) >= 5)
    assert len(mails_to(running_stack.mailbox, alice.email)) == 5  # three scheduled, two cancelled


def staff_url(running_stack, path: str) -> str:
    return running_stack.url("staff") + "/staff" + path


def test_only_admins_suspend_and_suspension_blocks_the_customer(running_stack):
    alice = create_customer()
    admin = create_identity(roles=["admin"])
    support = create_identity(roles=["support"])
    url = staff_url(running_stack, f"/accounts/{alice.uid}/suspension")
    body = {"code": "A", "reason": "Repeated policy violations in live streams"}
    assert requests.post(url, json=body, headers=browser_headers(alice), timeout=10).status_code == 403
    assert requests.post(url, json=body, headers=browser_headers(support), timeout=10).status_code == 403
    assert account(alice.uid)["status"] == "active"

    time.sleep(1.1)  # revocation has whole-second granularity
    assert requests.post(url, json=body, headers=browser_headers(admin), timeout=10).status_code == 204
    assert account(alice.uid)["status"] == "suspended"
    own = running_stack.url("account") + "/account/termination"
    assert requests.get(own, headers={"Cookie": browser_headers(alice)["Cookie"]}, timeout=10).status_code == 401
    assert requests.post(url, json=body, headers=browser_headers(admin), timeout=10).status_code == 409

    assert requests.delete(url, headers=browser_headers(admin), timeout=10).status_code == 204
    assert account(alice.uid)["status"] == "active"
    assert {"account.suspended", "account.suspension_lifted"} <= set(audit_actions(alice.uid))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"basis": "customer_convenience", "reason": "not staff's to use"}, "basis"),
        ({"basis": "notice_A", "reason": "no"}, "reason"),
        ({"basis": "breach_cure_period", "reason": "unpaid for months"}, "cure_period_days"),
    ],
)
def test_staff_termination_rules_are_enforced(running_stack, body, field):
    alice = create_customer()
    admin = create_identity(roles=["admin"])
    response = requests.post(
        staff_url(running_stack, f"/accounts/{alice.uid}/termination"),
        json=body,
        headers=browser_headers(admin),
        timeout=10,
    )
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert account(alice.uid)["status"] == "active"


def test_staff_termination_for_cause_with_a_legal_basis(running_stack):
    alice = create_customer()
    admin = create_identity(roles=["admin"])
    response = requests.post(
        staff_url(running_stack, f"/accounts/{alice.uid}/termination"),
        json={"basis": "legal_C", "reason": "Court order 115-A-123"},
        headers=browser_headers(admin),
        timeout=10,
    )
    assert response.status_code == 202
    assert response.json()["requested_by"]["kind"] == "staff"
    assert "termination.scheduled" in audit_actions(alice.uid)
    missing = requests.post(
        staff_url(running_stack, "/accounts/nobody-here/termination"),
        json={"basis": "legal_C", "reason": "Court order 115-A-123"},
        headers=browser_headers(admin),
        timeout=10,
    )
    assert missing.status_code == 404


def test_security_places_and_releases_a_hold(running_stack):
    alice = create_customer()
    security = create_identity(roles=["security"])
    support = create_identity(roles=["support"])
    url = staff_url(running_stack, f"/accounts/{alice.uid}/legal-holds")
    body = {"location_ids": ["invoices"], "reason": "Tax authority inquiry", "authority": "MOF 115-0042"}
    assert requests.post(url, json=body, headers=browser_headers(support), timeout=10).status_code == 403
    unknown = requests.post(
        url, json={**body, "location_ids": ["nowhere"]}, headers=browser_headers(security), timeout=10
    )
    assert unknown.status_code == 422
    placed = requests.post(url, json=body, headers=browser_headers(security), timeout=10)
    assert placed.status_code == 201
    hold_id = placed.json()["id"]
    release = staff_url(running_stack, f"/legal-holds/{hold_id}")
    why = {"reason": "The inquiry is closed (MOF letter 115-0099)"}
    # Releasing lets deletion go on: without a reason it is refused and the hold stays.
    assert requests.delete(release, headers=browser_headers(security), timeout=10).status_code in (415, 422)
    assert requests.delete(release, json={}, headers=browser_headers(security), timeout=10).status_code == 422
    assert requests.delete(release, json=why, headers=browser_headers(security), timeout=10).status_code == 200
    assert requests.delete(release, json=why, headers=browser_headers(security), timeout=10).status_code == 409
    entries = [d.to_dict() for d in clients.firestore_client().collection(f"accounts/{alice.uid}/audit_trail").stream()]
    assert any(e["action"] == "legal_hold.released" and e.get("reason") == why["reason"] for e in entries)
    assert {"legal_hold.placed", "legal_hold.released"} <= set(audit_actions(alice.uid))


def test_a_hold_released_by_several_at_once_is_released_and_audited_once(running_stack):
    from concurrent.futures import ThreadPoolExecutor

    alice = create_customer()
    security = create_identity(roles=["security"])
    body = {"location_ids": ["invoices"], "reason": "Tax authority inquiry", "authority": "MOF 115-0043"}
    placed = requests.post(
        staff_url(running_stack, f"/accounts/{alice.uid}/legal-holds"),
        json=body,
        headers=browser_headers(security),
        timeout=10,
    )
    release = staff_url(running_stack, f"/legal-holds/{placed.json()['id']}")
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda _: (
                    requests.delete(
                        release, json={"reason": "Inquiry closed"}, headers=browser_headers(security), timeout=30
                    ).status_code
                ),
                range(6),
            )
        )
    assert sorted(answers) == [200] + [409] * 5
    assert audit_actions(alice.uid).count("legal_hold.released") == 1


# --- issue #15, findings 28 and 29: the certificate and billing over HTTP ---------------------


def test_staff_read_an_account_s_billing_with_a_reason_and_the_customer_sees_the_read(running_stack):
    from orderpally.lifecycle import billing

    alice = create_customer()
    db = clients.firestore_client()
    now = datetime.now(UTC)
    for sequence, kind, amount in ((1, "invoice_issued", 800), (3, "payment_received", 800)):
        event = billing.BillingEvent(
            account_id=alice.uid, sequence=sequence, kind=kind, amount=amount, reference=f"R{sequence}", occurred_at=now
        )
        with contextlib.suppress(billing.OutOfOrder):
            billing.record_event(db, event)
    support = browser_headers(create_identity(roles=["support"]))
    base = running_stack.url("staff") + f"/staff/accounts/{alice.uid}/billing"
    assert requests.get(base, headers=support, timeout=10).status_code == 422  # no reason
    read = requests.get(base + "?reason=customer+asks+about+invoice+R1", headers=support, timeout=10)
    assert read.status_code == 200, read.text
    body = read.json()
    assert (body["outstanding_amount"], body["last_sequence"], body["waiting_for_sequence"]) == (800, 1, 2)
    assert [e["sequence"] for e in body["applied_events"]] == [1]
    assert body["applied_events"][0]["applied_at"]
    assert "staff.read" in audit_actions(alice.uid)
    customer = browser_headers(alice)
    assert requests.get(base + "?reason=customer+asks", headers=customer, timeout=10).status_code == 403


def test_the_deletion_certificate_for_staff_and_behind_the_customer_s_link(running_stack):
    from orderpally.lifecycle import certificates

    db = clients.firestore_client()
    uid = create_customer().uid
    batch = db.batch()
    link = certificates.issue_link(batch, db, uid, "", datetime.now(UTC))
    batch.commit()
    gateway = running_stack.gateway_url
    pending = requests.get(gateway + link, timeout=10)
    assert pending.status_code == 200
    assert pending.json()["status"] == "pending"
    assert pending.headers["Cache-Control"] == "no-store"
    # The deletion has run: the account is gone, its certificate stays.
    db.document(f"accounts/{uid}").delete()
    db.document(f"{deletion.CERTIFICATES}/{uid}").set(
        {
            "account_id": uid,
            "status": "completed",
            "certified_at": datetime.now(UTC),
            "locations": {
                "account_profile": {"kind": "document", "retention_class": "delete", "counts": {"deleted": 1}}
            },
        }
    )
    shown = requests.get(gateway + link, timeout=10).json()
    assert shown["status"] == "completed"
    assert uid not in repr(shown)
    assert requests.get(gateway + certificates.LINK_PATH + "?token=" + "x" * 43, timeout=10).status_code == 404

    admin = browser_headers(create_identity(roles=["admin"]))
    path = f"/staff/accounts/{uid}/deletion-certificate?reason=proof+for+the+regulator"
    staff = requests.get(gateway + path, headers=admin, timeout=10)
    assert staff.status_code == 200, staff.text
    assert staff.json()["account_id"] == uid
    # The account's trail is gone: the read is kept beside the certificate instead.
    reads = [s.to_dict() for s in db.collection(certificates.CLOSED_ACCOUNT_READS).stream()]
    assert {"account_id": uid, "what": "deletion_certificate", "reason": "proof for the regulator"}.items() <= next(
        r for r in reads if r["account_id"] == uid
    ).items()
    assert not db.collection(f"accounts/{uid}/audit_trail").get()

"""The termination and suspension use cases, called directly (no HTTP) against the emulators:
what they store, what they write to the audit trail, and what they refuse."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from orderpally import accounts, audit, clients, web
from orderpally.lifecycle import rules, service, store

pytestmark = pytest.mark.usefixtures("emulators")

UID = "service-uid-0001"
CUSTOMER = audit.Actor("customer", UID)
ADMIN = audit.Actor("staff", "staff-admin-1", "admin")


@pytest.fixture
def sent() -> list:
    return []


@pytest.fixture
def published() -> list[str]:
    return []


@pytest.fixture
def effects(sent, published) -> service.Effects:
    from firebase_admin import auth

    db = clients.firestore_client()
    accounts.create(
        db, UID, {"status": "active", "email": "dora@example.com", "display_name": "Dora", "language": "en"}
    )
    app = clients.firebase_app()
    try:
        auth.create_user(uid=UID, email="dora@example.com", app=app)
    except auth.UidAlreadyExistsError:
        auth.update_user(UID, disabled=False, app=app)
    return service.Effects(
        db=db,
        auth_app=app,
        send_email=sent.append,
        publish_deletion=published.append,
        public_base_url="https://api.orderpally.example",
    )


def trail_actions(account_id: str) -> list[str]:
    """The audit trail's actions, oldest first."""
    return [entry["action"] for entry in reversed(audit.entries(clients.firestore_client(), account_id))]


def status_of(account_id: str) -> str | None:
    return (accounts.load(clients.firestore_client(), account_id) or {}).get("status")


def firebase_disabled(effects: service.Effects) -> bool:
    from firebase_admin import auth

    return bool(auth.get_user(UID, app=effects.auth_app).disabled)


def tomorrow_in_taipei(now: datetime) -> date:
    return rules.taipei_today(now) + timedelta(days=1)


def test_a_customer_schedules_a_termination_and_cancels_it(effects, sent):
    now = datetime.now(UTC)
    record = service.request_termination(
        effects,
        UID,
        requested=tomorrow_in_taipei(now),
        session_issued_at=int(now.timestamp()),
        actor=CUSTOMER,
        client_address="203.0.113.7",
        now=now,
    )
    stored = store.termination(effects.db, UID)
    assert stored is not None
    assert stored["status"] == record["status"] == "scheduled"
    assert stored["basis"] == "customer_convenience"
    assert stored["terminate_at"] == rules.end_of_day(tomorrow_in_taipei(now))
    assert stored["requested_by"] == {"kind": "customer", "id": UID, "role": None}
    assert status_of(UID) == "terminating"
    [scheduled] = audit.entries(clients.firestore_client(), UID)
    assert scheduled["action"] == "termination.scheduled"
    assert scheduled["client_address"] == "203.0.113.7"
    assert scheduled["details"] == {"basis": "customer_convenience", "terminate_at": stored["terminate_at"].isoformat()}
    assert [m.template for m in sent] == ["termination_scheduled"]
    assert not firebase_disabled(effects)  # access ends on the date, not now

    later = now + timedelta(minutes=1)
    service.cancel_termination(effects, UID, actor=CUSTOMER, client_address=None, now=later)
    cancelled = store.termination(effects.db, UID) or {}
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] == later
    assert status_of(UID) == "active"
    assert trail_actions(UID) == ["termination.scheduled", "termination.cancelled"]
    assert [m.template for m in sent] == ["termination_scheduled", "termination_cancelled"]

    with pytest.raises(web.Problem) as refused:  # a cancelled termination is not cancelled twice
        service.cancel_termination(effects, UID, actor=CUSTOMER, client_address=None, now=later)
    assert (refused.value.status, refused.value.slug) == (409, "termination-final")
    assert trail_actions(UID) == ["termination.scheduled", "termination.cancelled"]


def test_terminating_needs_a_recent_sign_in(effects):
    now = datetime.now(UTC)
    with pytest.raises(web.Problem) as refused:
        service.request_termination(
            effects,
            UID,
            requested=None,
            session_issued_at=int(now.timestamp()) - 24 * 3600,
            actor=CUSTOMER,
            client_address=None,
            now=now,
        )
    assert (refused.value.status, refused.value.slug) == (401, "reauthentication-required")
    assert store.termination(effects.db, UID) is None
    assert status_of(UID) == "active"
    assert trail_actions(UID) == []


def test_only_staff_cancel_orderpally_s_termination(effects):
    now = datetime.now(UTC)
    service.terminate_by_staff(
        effects,
        UID,
        basis=rules.Basis.BREACH_CURE_PERIOD,
        reason="unpaid for months",
        requested=None,
        cure_period_days=14,
        actor=ADMIN,
        client_address=None,
        now=now,
    )
    assert (store.termination(effects.db, UID) or {})["terminate_at"] == rules.end_of_day(
        rules.taipei_today(now) + timedelta(days=14)
    )
    with pytest.raises(web.Problem) as refused:
        service.cancel_termination(effects, UID, actor=CUSTOMER, client_address=None, now=now)
    assert (refused.value.status, refused.value.slug) == (409, "termination-by-orderpally")
    assert (store.termination(effects.db, UID) or {})["status"] == "scheduled"

    service.cancel_termination(effects, UID, actor=ADMIN, client_address=None, now=now, reason="paid after all")
    assert (store.termination(effects.db, UID) or {})["cancel_reason"] == "paid after all"
    assert status_of(UID) == "active"
    cancelled = audit.entries(clients.firestore_client(), UID)[0]
    assert (cancelled["action"], cancelled["reason"], cancelled["actor"]["kind"]) == (
        "termination.cancelled",
        "paid after all",
        "staff",
    )


def test_a_due_termination_is_executed_by_the_sweep(effects, sent, published):
    now = datetime.now(UTC)
    service.schedule_termination(
        effects,
        UID,
        basis=rules.Basis.CUSTOMER_CONVENIENCE,
        terminate_at=now + timedelta(hours=1),
        actor=CUSTOMER,
        reason=None,
        client_address=None,
        now=now,
    )
    assert service.execute_due(effects, now) == {"executed": 0, "users_deleted": 0}  # not yet due
    assert (store.termination(effects.db, UID) or {})["status"] == "scheduled"

    due = now + timedelta(hours=2)
    assert service.execute_due(effects, due) == {"executed": 1, "users_deleted": 0}
    executed = store.termination(effects.db, UID) or {}
    assert executed["status"] == "executed"
    assert executed["executed_at"] == due
    assert executed["user_deleted"] is False  # until the deletion certificate is complete
    account = accounts.load(effects.db, UID) or {}
    assert account["status"] == "terminated"
    assert account["terminated_at"] == due
    assert firebase_disabled(effects)
    assert (store.deletion_job(effects.db, UID) or {})["status"] == "pending"
    assert published == [UID]
    assert trail_actions(UID) == ["termination.scheduled", "account.terminated"]
    assert sent[-1].template == "account_terminated"
    assert sent[-1].data["certificate_url"].startswith("https://api.orderpally.example/account/deletion-certificate?")

    assert service.execute_due(effects, due) == {"executed": 0, "users_deleted": 0}  # done once
    assert published == [UID]


def test_a_suspension_blocks_sign_in_and_lifting_it_restores_the_status(effects, sent):
    now = datetime.now(UTC)
    service.set_suspension(
        effects,
        UID,
        suspended=True,
        code="A",
        reason="suspected account takeover",
        actor=ADMIN,
        client_address=None,
        now=now,
    )
    account = accounts.load(effects.db, UID) or {}
    assert account["status"] == "suspended"
    assert account["suspension"] == {"code": "A", "reason": "suspected account takeover", "by": ADMIN.id, "at": now}
    assert firebase_disabled(effects)
    suspended = audit.entries(clients.firestore_client(), UID)[0]
    assert (suspended["action"], suspended["details"], suspended["reason"]) == (
        "account.suspended",
        {"code": "A"},
        "suspected account takeover",
    )
    with pytest.raises(web.Problem) as refused:
        service.set_suspension(
            effects, UID, suspended=True, code="A", reason="again", actor=ADMIN, client_address=None, now=now
        )
    assert (refused.value.status, refused.value.slug) == (409, "already-suspended")

    # A termination scheduled while suspended leaves the suspension in force ...
    service.schedule_termination(
        effects,
        UID,
        basis=rules.Basis.COMPANY_CONVENIENCE,
        terminate_at=now + timedelta(days=40),
        actor=ADMIN,
        reason="closing the region",
        client_address=None,
        now=now,
    )
    assert status_of(UID) == "suspended"
    # ... and lifting the suspension restores the account as terminating, not active.
    service.set_suspension(
        effects, UID, suspended=False, code=None, reason="cleared", actor=ADMIN, client_address=None, now=now
    )
    account = accounts.load(effects.db, UID) or {}
    assert account["status"] == "terminating"
    assert account["suspension"] is None
    assert not firebase_disabled(effects)
    assert trail_actions(UID) == ["account.suspended", "termination.scheduled", "account.suspension_lifted"]
    assert [m.template for m in sent] == ["account_suspended", "termination_scheduled", "account_suspension_lifted"]


def test_an_unknown_account_is_not_found(effects):
    with pytest.raises(web.Problem) as refused:
        service.set_suspension(
            effects,
            "no-such-account",
            suspended=True,
            code="A",
            reason="typo",
            actor=ADMIN,
            client_address=None,
            now=datetime.now(UTC),
        )
    assert (refused.value.status, refused.value.slug, refused.value.title) == (404, "account-not-found", "Not found")

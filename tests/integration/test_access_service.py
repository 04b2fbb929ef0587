"""access.service's sign-in and API-key use cases called directly, without HTTP, against the
Firestore and Auth emulators (and Identity Platform's REST API on the Auth emulator)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from orderpally import audit, clients, limiter, web
from orderpally.access import api_keys, service
from orderpally.access import http as access_http
from orderpally.access.principal import Principal
from support.identities import PASSWORD, create_customer

pytestmark = pytest.mark.usefixtures("emulators")


def ports() -> service.Ports:
    # The HTTP edge's own ports; sign-in and keys mail nothing, and this tier has no topic to publish to.
    return dataclasses.replace(access_http.ports(), publish_mail=lambda notice: None)


def address() -> str:
    """A client address of this test's own, so no other test's attempts fill its counters."""
    return f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def failures_counted(email: str, at: str, now: datetime) -> int:
    """How many attempts the per-address-and-account counter holds for `now`'s window."""
    counter, _ = limiter._counter(
        limiter.configured(service.SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS), f"{email}|{at}", now
    )
    snap = clients.firestore_client().collection("rate_limits").document(counter[0]).get()
    return int(snap.get("count")) if snap.exists else 0


def test_a_sign_in_with_the_right_password_starts_a_session_and_counts_no_failure():
    customer = create_customer()
    at = address()
    new = service.sign_in(ports(), customer.email.upper(), PASSWORD, at, None)
    assert new.body["account_id"] == customer.uid
    assert new.cookie
    assert new.csrf
    assert new.device_token  # a password sign-in trusts this browser
    assert failures_counted(customer.email, at, datetime.now(UTC)) == 0  # counted, then given back
    actions = [e["action"] for e in audit.entries(clients.firestore_client(), customer.uid)]
    assert "sign_in.succeeded" in actions


def test_a_sign_in_answers_with_its_entry_staged_and_the_sequencer_links_it_into_an_intact_chain():
    customer = create_customer()
    chain = audit.account_chain(clients.firestore_client(), customer.uid)
    head_before = (chain.head.get().to_dict() or {}).get("seq", 0)
    service.sign_in(ports(), customer.email, PASSWORD, address(), None)
    # Answered before linking: the entry is durable in the pending list, and the head has not moved.
    staged = [snap.to_dict() or {} for snap in audit.pending(chain).stream()]
    assert [e["action"] for e in staged] == ["sign_in.succeeded"]
    assert (chain.head.get().to_dict() or {}).get("seq", 0) == head_before
    assert audit.link_stragglers(clients.firestore_client()) >= 1
    assert list(audit.pending(chain).stream()) == []
    linked = [snap.to_dict() or {} for snap in chain.entries.order_by("seq").stream()]
    assert linked[-1]["action"] == "sign_in.succeeded"
    assert audit.verify(clients.firestore_client(), customer.uid).intact


def test_a_sign_in_whose_session_cannot_be_minted_gives_its_attempts_back_and_records_no_success(monkeypatch):
    customer = create_customer()
    at = address()

    class MintFails(Exception):
        pass

    def refuse(*_: object, **__: object) -> str:
        raise MintFails

    monkeypatch.setattr(service.sessions, "mint", refuse)  # Firebase failing between the password and the cookie
    with pytest.raises(MintFails):
        service.sign_in(ports(), customer.email, PASSWORD, at, None)
    assert failures_counted(customer.email, at, datetime.now(UTC)) == 0
    assert not any(e["action"] == "sign_in.succeeded" for e in audit.entries(clients.firestore_client(), customer.uid))


def test_a_wrong_password_is_refused_counted_and_on_the_trail():
    customer = create_customer()
    at = address()
    with pytest.raises(web.Problem) as refused:
        service.sign_in(ports(), customer.email, "not the password at all", at, None)
    assert (refused.value.status, refused.value.slug) == (401, "invalid-credentials")
    assert failures_counted(customer.email, at, datetime.now(UTC)) == 1
    entries = audit.entries(clients.firestore_client(), customer.uid)
    failed = [e for e in entries if e["action"] == "sign_in.failed"]
    assert len(failed) == 1
    assert failed[0]["client_address"] == at
    assert not any(e["action"] == "sign_in.succeeded" for e in entries)


def test_an_api_key_is_created_listed_and_once_revoked_refused():
    customer = create_customer()
    owner = Principal(kind="customer", account_id=customer.uid, email_verified=True)
    p = ports()
    record, key = service.issue_key(p, owner, "shop till", ["audit:read"], 30, "198.18.0.1")
    assert key.startswith("opk_")
    assert [k["id"] for k in service.keys_of(p, owner)] == [record["id"]]
    assert "api_key.created" in [e["action"] for e in audit.entries(clients.firestore_client(), customer.uid)]

    as_key = api_keys.principal(p.db, key, p.pepper, "198.18.0.2", datetime.now(UTC))
    assert (as_key.kind, as_key.account_id, as_key.credential_id) == ("api_key", customer.uid, record["id"])
    assert as_key.scopes == frozenset({"audit:read"})

    service.revoke_key(p, owner, record["id"], "198.18.0.1")
    listed = service.keys_of(p, owner)
    assert [k["id"] for k in listed] == [record["id"]]
    assert listed[0]["revoked_at"] is not None
    with pytest.raises(web.Problem) as refused:
        api_keys.principal(p.db, key, p.pepper, "198.18.0.2", datetime.now(UTC))
    assert (refused.value.status, refused.value.slug) == (401, "unauthenticated")


def test_another_accounts_key_cannot_be_revoked():
    customer, stranger = create_customer(), create_customer()
    p = ports()
    owner = Principal(kind="customer", account_id=customer.uid, email_verified=True)
    record, key = service.issue_key(p, owner, "mine", ["audit:read"], 30, None)
    with pytest.raises(web.Problem) as refused:
        service.revoke_key(p, Principal(kind="customer", account_id=stranger.uid), record["id"], None)
    assert refused.value.status == 404
    assert api_keys.principal(p.db, key, p.pepper, None, datetime.now(UTC)).account_id == customer.uid


def test_many_revocations_of_one_key_at_once_all_succeed_and_are_audited_once():
    """A double click, several tabs, a script retrying: none of them is a 5xx, and the trail
    holds one revocation. (Transactions on the one key document contended, and gave up.)"""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    customer = create_customer()
    owner = Principal(kind="customer", account_id=customer.uid, email_verified=True)
    p = ports()
    record, _ = service.issue_key(p, owner, "clicked twice", ["audit:read"], 30, None)
    start = threading.Barrier(12)

    def revoke(_: int) -> None:
        start.wait()
        service.revoke_key(p, owner, record["id"], None)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(revoke, range(12)))  # re-raises any refusal or backend error
    actions = [e["action"] for e in audit.entries(clients.firestore_client(), customer.uid, 100)]
    assert actions.count("api_key.revoked") == 1
    assert service.keys_of(p, owner)[0]["revoked_at"] is not None

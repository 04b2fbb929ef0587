"""Email sign-in, sessions, API keys, staff reads and the audit trail, over HTTP as a frontend would call them."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from smtp_sink import read_mailbox
from support.identities import FRONTEND_ORIGIN, create_customer, create_identity
from support.waiting import mails_to, wait_for

pytestmark = pytest.mark.usefixtures("running_stack")
PASSWORD = "a long and unusual passphrase"


def link_in(mail) -> str:
    return re.search(r"https?://\S+", mail.get_body(("plain",)).get_content()).group(0)


class Browser:
    """Holds the cookies a browser would, and sends Origin and the CSRF token like the frontend."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.cookies: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        headers = {"Origin": FRONTEND_ORIGIN}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers["X-CSRF-Token"] = self.cookies.get("__Host-op_csrf", "")
        return headers

    def call(self, method: str, function: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(
            method,
            self.stack.url(function) + path,
            headers={**self.headers(), **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )
        for cookie in response.cookies:
            if cookie.value:
                self.cookies[cookie.name] = cookie.value
            else:
                self.cookies.pop(cookie.name, None)
        return response

    def sign_in(self, email: str, password: str = PASSWORD) -> requests.Response:
        return self.call("POST", "auth", "/auth/sign-in", json={"email": email, "password": password})


def sign_up(stack, email: str, password: str = PASSWORD) -> requests.Response:
    body = {"email": email, "password": password, "display_name": "Tea Shop", "kind": "store", "language": "en"}
    return requests.post(
        stack.url("auth") + "/auth/sign-up", json=body, headers={"Origin": FRONTEND_ORIGIN}, timeout=30
    )


def test_sign_up_verify_sign_in_and_use_an_api_key(running_stack):
    email = "tea-shop@example.com"
    first = sign_up(running_stack, email)
    assert first.status_code == 202
    again = sign_up(running_stack, email)
    assert (again.status_code, again.json()) == (first.status_code, first.json())  # registered or not: same answer
    wait_for(lambda: len(mails_to(running_stack.mailbox, email)) == 2)
    subjects = sorted(str(m["Subject"]) for m in mails_to(running_stack.mailbox, email))
    assert subjects == ["Confirm your email address for OrderPally", "Someone tried to sign up with your email address"]

    browser = Browser(running_stack)
    signed_in = browser.sign_in(email)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["email_verified"] is False
    set_cookie = signed_in.headers.get("Set-Cookie", "")
    assert "__Host-op_session=" in set_cookie
    assert "HttpOnly" in set_cookie
    assert "Secure" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert (
        browser.call(
            "POST", "account", "/account/api-keys", json={"name": "shop", "scopes": ["audit:read"]}
        ).status_code
        == 403
    )

    verification = next(m for m in mails_to(running_stack.mailbox, email) if "Confirm" in str(m["Subject"]))
    followed = requests.get(link_in(verification), timeout=30, allow_redirects=False)
    # The link verifies the address and returns the browser to the frontend.
    assert followed.status_code == 303
    assert followed.headers["Location"].startswith(FRONTEND_ORIGIN + "/")
    # The session tells what Firebase Auth holds now, and that this session predates it.
    state = browser.call("GET", "auth", "/auth/session").json()
    assert (state["email_verified"], state["session_email_verified"]) == (True, False)
    assert state["csrf_token"] == browser.cookies["__Host-op_csrf"]  # recoverable after a reload
    browser.sign_in(email)
    state = browser.call("GET", "auth", "/auth/session").json()
    assert (state["email_verified"], state["session_email_verified"]) == (True, True)

    created = browser.call("POST", "account", "/account/api-keys", json={"name": "shop sync", "scopes": ["audit:read"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("opk_")
    listed = browser.call("GET", "account", "/account/api-keys").json()["api_keys"]
    assert [k["name"] for k in listed] == ["shop sync"]
    assert "key" not in listed[0]
    assert "hash" not in listed[0]

    bearer = {"Authorization": f"Bearer {key}"}
    trail = requests.get(running_stack.url("account") + "/account/audit-trail", headers=bearer, timeout=30)
    assert trail.status_code == 200
    actions = [e["action"] for e in trail.json()["entries"]]
    for expected in ("account.created", "sign_in.succeeded", "api_key.created", "api_key.used"):
        assert expected in actions
    # The key lacks the export scope; a key is refused in the query string and in cookies.
    assert (
        requests.post(running_stack.url("account") + "/account/exports", headers=bearer, timeout=30).status_code == 403
    )
    assert requests.get(running_stack.url("account") + f"/account/audit-trail?key={key}", timeout=30).status_code == 401
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert (
        requests.get(
            running_stack.url("account") + "/account/audit-trail",
            headers={"Authorization": f"Bearer {tampered}"},
            timeout=30,
        ).status_code
        == 401
    )

    key_id = created.json()["id"]
    with ThreadPoolExecutor(4) as pool:  # a double click, or several tabs: one revocation, audited once
        answers = list(
            pool.map(lambda _: browser.call("DELETE", "account", f"/account/api-keys/{key_id}").status_code, range(4))
        )
    assert answers == [204] * 4
    assert (
        requests.get(running_stack.url("account") + "/account/audit-trail", headers=bearer, timeout=30).status_code
        == 401
    )
    trail = browser.call("GET", "account", "/account/audit-trail").json()["entries"]
    assert [e["action"] for e in trail].count("api_key.revoked") == 1


def test_wrong_password_and_unknown_email_look_the_same_and_are_throttled(running_stack):
    customer = create_customer()
    browser = Browser(running_stack)
    wrong = browser.sign_in(customer.email, "not the password at all")
    unknown = browser.sign_in("nobody-here@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "__Host-op_session" not in browser.cookies
    for _ in range(4):  # five failures in all: the limit
        browser.sign_in(customer.email, "not the password at all")
    limited = browser.sign_in(customer.email, "not the password at all")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    # The limit is on guesses at this account from this address, not on the right password elsewhere... nor here
    # for another account.
    assert browser.sign_in("nobody-else@example.com", "x" * 9).status_code == 401


def test_weak_passwords_and_malformed_sign_ups_are_refused(running_stack):
    assert sign_up(running_stack, "short@example.com", "short").status_code == 422
    common = sign_up(running_stack, "common@example.com", "password123")
    assert common.status_code == 422
    assert common.json()["field"] == "password"
    response = requests.post(
        running_stack.url("auth") + "/auth/sign-up",
        data="{",
        headers={"Content-Type": "application/json", "Origin": FRONTEND_ORIGIN},
        timeout=30,
    )
    assert response.status_code == 400
    foreign = requests.post(
        running_stack.url("auth") + "/auth/sign-in",
        json={"email": "a@example.com", "password": "x"},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert foreign.status_code == 403
    assert read_mailbox(running_stack.mailbox) == []


def test_sign_out_and_password_change_end_sessions(running_stack):
    customer = create_customer()
    first, second = Browser(running_stack), Browser(running_stack)
    assert first.sign_in(customer.email, "correct horse battery staple").status_code == 200
    # Session cookies minted in the same second for one user are byte-identical; apart, they differ.
    time.sleep(1.1)
    assert second.sign_in(customer.email, "correct horse battery staple").status_code == 200
    stale = dict(first.cookies)
    assert first.call("POST", "auth", "/auth/sign-out").status_code == 204
    replay = Browser(running_stack)
    replay.cookies = stale
    assert replay.call("GET", "auth", "/auth/session").status_code == 401
    assert second.call("GET", "auth", "/auth/session").status_code == 200

    time.sleep(1.1)  # Firebase revocation has whole-second granularity
    changed = second.call(
        "POST",
        "auth",
        "/auth/password",
        json={"current_password": "correct horse battery staple", "new_password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    after = second.call("GET", "auth", "/auth/session")
    assert after.status_code == 200, (after.text, changed.headers.get("Set-Cookie"))
    assert Browser(running_stack).sign_in(customer.email, PASSWORD).status_code == 200
    wait_for(lambda: mails_to(running_stack.mailbox, customer.email))
    trail = second.call("GET", "account", "/account/audit-trail").json()["entries"]
    assert {"sign_out", "password.changed", "sign_in.succeeded"} <= {e["action"] for e in trail}


def test_password_reset_answers_alike_and_mails_only_real_accounts(running_stack):
    customer = create_customer()
    url = running_stack.url("auth") + "/auth/password-reset"
    known = requests.post(url, json={"email": customer.email}, headers={"Origin": FRONTEND_ORIGIN}, timeout=30)
    unknown = requests.post(url, json={"email": "ghost@example.com"}, headers={"Origin": FRONTEND_ORIGIN}, timeout=30)
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json()) == (202, known.json())
    wait_for(lambda: mails_to(running_stack.mailbox, customer.email))
    assert "oobCode=" in link_in(mails_to(running_stack.mailbox, customer.email)[0])
    assert mails_to(running_stack.mailbox, "ghost@example.com") == []


def test_staff_reads_need_a_role_and_a_reason_and_show_in_the_customers_trail(running_stack):
    alice, bob = create_customer(), create_customer()
    support = create_identity(roles=["support"])
    admin = create_identity(roles=["admin"])

    def as_(identity):
        browser = Browser(running_stack)
        browser.cookies = {"__Host-op_session": identity.session_cookie, "__Host-op_csrf": "t"}
        return browser

    assert as_(support).call("GET", "staff", f"/staff/accounts/{alice.uid}").status_code == 422  # no reason
    read = as_(support).call(
        "GET", "staff", f"/staff/accounts/{alice.uid}", params={"reason": "ticket 4411: order missing"}
    )
    assert read.status_code == 200
    assert read.json()["email"] == alice.email
    assert (
        as_(bob).call("GET", "staff", f"/staff/accounts/{alice.uid}", params={"reason": "curious about it"}).status_code
        == 403
    )
    trail = as_(alice).call("GET", "account", "/account/audit-trail").json()["entries"]
    staff_reads = [e for e in trail if e["action"] == "staff.read"]
    # The customer sees the role and the reason, not who at OrderPally it was nor from where.
    assert [(e["actor"], e["reason"]) for e in staff_reads] == [
        ({"kind": "staff", "role": "support"}, "ticket 4411: order missing")
    ]
    assert [e["client_address"] for e in staff_reads] == [None]
    assert support.uid not in str(trail)
    # Security staff reading the trail, with a reason, see who it was.
    as_security = as_(create_identity(roles=["security"]))
    staff_view = as_security.call(
        "GET", "staff", f"/staff/accounts/{alice.uid}/audit-trail", params={"reason": "review of staff access"}
    ).json()["entries"]
    assert support.uid in [e["actor"].get("id") for e in staff_view]

    # Roles: only admins grant them; the grant ends the target's sessions.
    assert (
        as_(support)
        .call("PUT", "staff", f"/staff/staff-roles/{bob.uid}", json={"roles": ["support"], "reason": "new hire"})
        .status_code
        == 403
    )
    time.sleep(1.1)  # Firebase revocation has whole-second granularity
    granted = as_(admin).call(
        "PUT", "staff", f"/staff/staff-roles/{bob.uid}", json={"roles": ["support"], "reason": "joined support"}
    )
    assert granted.status_code == 200
    assert as_(bob).call("GET", "auth", "/auth/session").status_code == 401
    staff_browser = Browser(running_stack)
    assert staff_browser.sign_in(bob.email, "correct horse battery staple").json()["roles"] == ["support"]


def test_staff_roles_go_to_no_unverified_account(running_stack):
    from firebase_admin import auth

    from orderpally import clients

    admin = Browser(running_stack)
    admin.cookies = {"__Host-op_session": create_identity(roles=["admin"]).session_cookie, "__Host-op_csrf": "t"}
    squatter = create_identity(verified=False)
    refused = admin.call(
        "PUT", "staff", f"/staff/staff-roles/{squatter.uid}", json={"roles": ["admin"], "reason": "new admin"}
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("staff-address-unverified")
    assert (auth.get_user(squatter.uid, app=clients.firebase_app()).custom_claims or {}).get("roles") is None


def test_security_staff_find_a_tampered_trail(running_stack):
    from orderpally import audit, clients

    customer = create_customer()
    browser = Browser(running_stack)
    assert browser.sign_in(customer.email, "correct horse battery staple").status_code == 200
    browser.call("POST", "auth", "/auth/sign-out")
    security = Browser(running_stack)
    security.cookies = {"__Host-op_session": create_identity(roles=["security"]).session_cookie, "__Host-op_csrf": "t"}
    path = f"/staff/accounts/{customer.uid}/audit-trail/verification?reason=tamper+check+ticket+9"
    assert security.call("GET", "staff", path).json()["intact"] is True
    clients.firestore_client().document(f"accounts/{customer.uid}/audit_trail/{audit.entry_id(1)}").update(
        {"client_address": "198.51.100.7"}
    )
    verdict = security.call("GET", "staff", path).json()
    assert verdict["intact"] is False
    assert verdict["first_broken_seq"] == 1
    support = Browser(running_stack)
    support.cookies = {"__Host-op_session": create_identity(roles=["support"]).session_cookie}
    assert support.call("GET", "staff", path).status_code == 403


def test_a_burst_of_key_creations_never_exceeds_the_cap_and_audits_every_key(running_stack):
    from concurrent.futures import ThreadPoolExecutor

    from orderpally import audit, clients
    from orderpally.access import api_keys
    from support.identities import browser_headers

    customer = create_customer()
    url = running_stack.url("account") + "/account/api-keys"

    def create(i: int) -> requests.Response:
        body = {"name": f"burst {i}", "scopes": ["audit:read"]}
        return requests.post(url, json=body, headers=browser_headers(customer), timeout=60)

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(create, range(api_keys.MAX_ACTIVE_KEYS + 6)))
    assert {a.status_code for a in answers} <= {201, 409}
    created = sorted(a.json()["id"] for a in answers if a.status_code == 201)
    stored = sorted(k["id"] for k in api_keys.owned(clients.firestore_client(), customer.uid))
    assert stored == created  # no key nobody was shown
    assert len(stored) <= api_keys.MAX_ACTIVE_KEYS
    audited = sorted(
        e["details"]["key_id"]
        for e in audit.entries(clients.firestore_client(), customer.uid, 100)
        if e["action"] == "api_key.created"
    )
    assert audited == created


def test_concurrent_guesses_at_one_password_are_all_counted(running_stack):
    from concurrent.futures import ThreadPoolExecutor

    from orderpally import audit, clients

    customer = create_customer()

    def guess(i: int) -> int:
        return Browser(running_stack).sign_in(customer.email, f"wrong guess number {i}").status_code

    with ThreadPoolExecutor(max_workers=15) as pool:
        answers = list(pool.map(guess, range(15)))
    assert set(answers) <= {401, 429}
    assert answers.count(401) <= 5  # the per-account-and-address limit, however the guesses interleave
    failed = [
        e for e in audit.entries(clients.firestore_client(), customer.uid, 100) if e["action"] == "sign_in.failed"
    ]
    assert len(failed) == answers.count(401)
    # The right password from this address is refused too while the limit holds; elsewhere it is not.
    assert Browser(running_stack).sign_in(customer.email).status_code == 429

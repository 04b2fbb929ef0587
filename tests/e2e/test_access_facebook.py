"""Facebook sign-in, the whole server-side code flow against the local Facebook stand-in."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from orderpally import clients
from smtp_sink import read_mailbox
from support.identities import create_customer

pytestmark = pytest.mark.usefixtures("running_stack")


def standin(stack) -> str:
    return f"http://127.0.0.1:{stack.ports.facebook}"


def set_mode(stack, mode: str) -> None:
    requests.put(standin(stack) + "/_standin/mode", params={"mode": mode}, timeout=10).raise_for_status()


def set_profile(stack, **profile) -> None:
    requests.put(standin(stack) + "/_standin/profile", json=profile, timeout=10).raise_for_status()


def start(stack) -> tuple[str, requests.Response]:
    """Our start endpoint, then Facebook's dialog (the user consents): the callback URL and the state cookie."""
    started = requests.get(stack.url("auth") + "/auth/facebook/start", allow_redirects=False, timeout=30)
    assert started.status_code == 302
    state_cookie = started.cookies.get("__Host-op_fb_state")
    dialog = started.headers["Location"]
    assert parse_qs(urlsplit(dialog).query)["state"] == [state_cookie]
    consented = requests.get(dialog, allow_redirects=False, timeout=30)
    assert consented.status_code == 302
    return consented.headers["Location"], state_cookie


def finish(callback_url: str, state_cookie: str | None) -> requests.Response:
    headers = {"Cookie": f"__Host-op_fb_state={state_cookie}"} if state_cookie else {}
    return requests.get(callback_url, headers=headers, allow_redirects=False, timeout=30)


def session_cookie(response: requests.Response) -> str | None:
    return response.cookies.get("__Host-op_session")


def test_a_new_facebook_user_gets_an_account_and_a_session(running_stack):
    set_profile(running_stack, id="20001", name="Mei", email="mei@example.com")
    callback, state = start(running_stack)
    done = finish(callback, state)
    assert done.status_code == 303, done.text
    cookie = session_cookie(done)
    assert cookie
    session = requests.get(
        running_stack.url("auth") + "/auth/session", headers={"Cookie": f"__Host-op_session={cookie}"}, timeout=30
    ).json()
    account = clients.firestore_client().document(f"accounts/{session['account_id']}").get().to_dict()
    assert account["facebook_id"] == "20001"
    assert account["email"] == "mei@example.com"

    # Next time the same Facebook user signs in to the same account.
    time.sleep(1.1)
    callback, state = start(running_stack)
    again = finish(callback, state)
    assert again.status_code == 303
    second = requests.get(
        running_stack.url("auth") + "/auth/session",
        headers={"Cookie": f"__Host-op_session={session_cookie(again)}"},
        timeout=30,
    ).json()
    assert second["account_id"] == session["account_id"]


@pytest.mark.parametrize(
    ("mode", "status", "problem"),
    [
        ("wrong_app", 401, "facebook-token-rejected"),
        ("expired", 401, "facebook-token-rejected"),
        ("invalid_token", 401, "facebook-token-rejected"),
        ("exchange_error", 401, "facebook-token-rejected"),
        ("slow", 503, "facebook-unavailable"),
        ("not_json", 503, "facebook-unavailable"),
    ],
)
def test_a_misbehaving_facebook_ends_in_a_clear_error_and_no_session(running_stack, mode, status, problem):
    callback, state = start(running_stack)
    set_mode(running_stack, mode)
    done = finish(callback, state)
    assert done.status_code == status
    assert done.json()["type"] == f"urn:orderpally:problem:{problem}"
    assert session_cookie(done) is None
    assert clients.firestore_client().collection("accounts").get() == []


def test_state_must_match_the_browser_that_started(running_stack):
    callback, state = start(running_stack)
    assert finish(callback, None).status_code == 400
    assert finish(callback, "someone-elses-state").json()["type"] == "urn:orderpally:problem:facebook-state-mismatch"
    denied = requests.get(
        running_stack.url("auth") + "/auth/facebook/callback",
        params={"error": "access_denied", "error_reason": "user_denied", "state": state},
        headers={"Cookie": f"__Host-op_fb_state={state}"},
        timeout=30,
    )
    assert denied.status_code == 401
    assert session_cookie(denied) is None


def test_a_browser_meeting_a_problem_is_sent_back_to_the_frontend_with_its_slug(running_stack):
    from urllib.parse import parse_qs, urlsplit

    from orderpally.config import settings

    callback, _ = start(running_stack)
    navigate = {"Sec-Fetch-Mode": "navigate", "Cookie": "__Host-op_fb_state=someone-elses-state"}
    landed = requests.get(callback, headers=navigate, allow_redirects=False, timeout=30)
    assert landed.status_code == 303
    target = urlsplit(landed.headers["Location"])
    assert f"{target.scheme}://{target.netloc}" == settings().frontend_origins[0]
    assert parse_qs(target.query) == {"sign_in_error": ["facebook-state-mismatch"]}
    assert session_cookie(landed) is None
    expired = requests.get(
        running_stack.url("auth") + "/auth/facebook/link",
        params={"token": "x" * 43},
        headers={"Sec-Fetch-Mode": "navigate"},
        allow_redirects=False,
        timeout=30,
    )
    assert expired.status_code == 303
    assert "sign_in_error=facebook-link-expired" in expired.headers["Location"]


def test_an_existing_email_is_linked_only_after_its_owner_confirms(running_stack):
    owner = create_customer(language="en")
    set_profile(running_stack, id="30003", name="Owner?", email=owner.email)
    callback, state = start(running_stack)
    held = finish(callback, state)
    assert held.status_code == 409
    assert session_cookie(held) is None
    assert "facebook_id" not in clients.firestore_client().document(f"accounts/{owner.uid}").get().to_dict()

    deadline = time.monotonic() + 30
    while not read_mailbox(running_stack.mailbox) and time.monotonic() < deadline:
        time.sleep(0.2)
    (mail,) = read_mailbox(running_stack.mailbox)
    assert str(mail["To"]) == owner.email
    link = re.search(r"https?://\S+", mail.get_body(("plain",)).get_content()).group(0)
    linked = requests.get(link, allow_redirects=False, timeout=30)
    assert linked.status_code == 303
    assert session_cookie(linked)
    assert clients.firestore_client().document(f"accounts/{owner.uid}").get().to_dict()["facebook_id"] == "30003"
    assert requests.get(link, allow_redirects=False, timeout=30).status_code == 410  # one use only


@pytest.mark.parametrize("email", [None, "twins@example.com"])
def test_concurrent_first_sign_ins_of_one_facebook_user_make_one_account(running_stack, email):
    from concurrent.futures import ThreadPoolExecutor

    facebook_id = "40001" if email is None else "40002"
    set_profile(running_stack, id=facebook_id, name="Twin", **({"email": email} if email else {}))
    flows = [start(running_stack) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=len(flows)) as pool:
        answers = list(pool.map(lambda flow: finish(*flow), flows))
    assert [a.status_code for a in answers] == [303] * len(flows), [a.text for a in answers]
    from google.cloud.firestore import FieldFilter

    owners = (
        clients.firestore_client().collection("accounts").where(filter=FieldFilter("facebook_id", "==", facebook_id))
    )
    assert len(owners.get()) == 1


@pytest.mark.parametrize("email", ["a@b@c", "@", "x@y.com\r\nBcc: v@x.com", "ü@exämple.com"])
def test_an_unusable_email_from_facebook_is_ignored_not_a_crash(running_stack, email):
    set_profile(running_stack, id="40003", name="Odd", email=email)
    done = finish(*start(running_stack))
    assert done.status_code == 303, done.text
    session = requests.get(
        running_stack.url("auth") + "/auth/session",
        headers={"Cookie": f"__Host-op_session={session_cookie(done)}"},
        timeout=30,
    ).json()
    assert clients.firestore_client().document(f"accounts/{session['account_id']}").get().get("email") is None


def test_a_returning_facebook_user_gets_a_new_account_after_deletion(running_stack):
    from orderpally.lifecycle import deletion
    from support.identities import browser_headers, create_identity
    from support.waiting import wait_for

    def sign_in() -> str:
        callback, state = start(running_stack)
        done = finish(callback, state)
        assert done.status_code == 303, done.text
        cookie = session_cookie(done)
        session = requests.get(
            running_stack.url("auth") + "/auth/session", headers={"Cookie": f"__Host-op_session={cookie}"}, timeout=30
        )
        return session.json()["account_id"]

    set_profile(running_stack, id="20077", name="Lin", email="lin@example.com")
    first = sign_in()
    admin = create_identity(roles=["admin"])
    terminate = {"basis": "legal_C", "reason": "Court order 115-A-777"}
    staff = running_stack.url("staff") + f"/staff/accounts/{first}/termination"
    assert requests.post(staff, json=terminate, headers=browser_headers(admin), timeout=30).status_code == 202
    certificate = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{first}")
    wait_for(lambda: certificate.get().exists and certificate.get().to_dict()["status"] == "completed")
    swept = requests.post(running_stack.url("due-terminations") + "/", json={}, timeout=60).json()
    assert swept["users_deleted"] == 1

    # The same person comes back: a new account, which none of the old one's records govern.
    time.sleep(1.1)
    second = sign_in()
    assert second != first
    account = clients.firestore_client().document(f"accounts/{second}").get().to_dict()
    assert (account["status"], account["facebook_id"]) == ("active", "20077")
    again = running_stack.url("staff") + f"/staff/accounts/{second}/termination"
    later = {"basis": "company_convenience", "reason": "The contract ends"}
    assert requests.post(again, json=later, headers=browser_headers(admin), timeout=30).status_code == 202


def test_linking_a_pre_registered_address_locks_out_whoever_registered_it(running_stack):
    """An attacker signs up with the victim's address first and keeps the session; the victim
    later signs in with Facebook and follows the genuine link mail."""
    from support.identities import FRONTEND_ORIGIN

    victim = "victim@example.com"
    origin = {"Origin": FRONTEND_ORIGIN}
    attacker_password = "attacker's own password 123"
    body = {"email": victim, "password": attacker_password, "kind": "consumer", "display_name": "Mallory"}
    assert requests.post(running_stack.url("auth") + "/auth/sign-up", json=body, headers=origin, timeout=30).ok
    signed_in = requests.post(
        running_stack.url("auth") + "/auth/sign-in",
        json={"email": victim, "password": attacker_password},
        headers=origin,
        timeout=30,
    )
    assert signed_in.status_code == 200, signed_in.text
    attacker = {"Cookie": f"__Host-op_session={session_cookie(signed_in)}"}
    session_url = running_stack.url("auth") + "/auth/session"
    assert requests.get(session_url, headers=attacker, timeout=30).status_code == 200

    set_profile(running_stack, id="30099", name="Victim", email=victim)
    callback, state = start(running_stack)
    assert finish(callback, state).status_code == 409

    def link_mail():
        mails = [
            m for m in read_mailbox(running_stack.mailbox) if "facebook/link" in m.get_body(("plain",)).get_content()
        ]
        return mails[0] if mails else None

    deadline = time.monotonic() + 30
    while not link_mail() and time.monotonic() < deadline:
        time.sleep(0.2)
    link = re.search(r"https?://\S+/auth/facebook/link\S*", link_mail().get_body(("plain",)).get_content()).group(0)
    linked = requests.get(link, allow_redirects=False, timeout=60)
    assert linked.status_code == 303
    victim_session = {"Cookie": f"__Host-op_session={session_cookie(linked)}"}

    # The attacker's session and password no longer work; the victim's session does.
    assert requests.get(session_url, headers=attacker, timeout=30).status_code == 401
    again = requests.post(
        running_stack.url("auth") + "/auth/sign-in",
        json={"email": victim, "password": attacker_password},
        headers=origin,
        timeout=30,
    )
    assert again.status_code == 401
    assert requests.get(session_url, headers=victim_session, timeout=30).json()["email_verified"] is True


def test_a_facebook_user_without_an_address_can_use_their_account(running_stack):
    from support.identities import FRONTEND_ORIGIN

    set_profile(running_stack, id="30100", name="Phone only")
    callback, state = start(running_stack)
    done = finish(callback, state)
    assert done.status_code == 303, done.text
    browser = {
        "Cookie": f"__Host-op_session={session_cookie(done)}; __Host-op_csrf=t",
        "X-CSRF-Token": "t",
        "Origin": FRONTEND_ORIGIN,
    }
    account = running_stack.url("account")
    verify = requests.post(running_stack.url("auth") + "/auth/email-verification", headers=browser, timeout=30)
    assert verify.status_code == 409
    assert verify.json()["type"].endswith("no-email-address")
    key = requests.post(
        account + "/account/api-keys", json={"name": "shop", "scopes": ["audit:read"]}, headers=browser, timeout=30
    )
    assert key.status_code == 201, key.text
    assert requests.post(account + "/account/exports", json={}, headers=browser, timeout=30).status_code == 202
    ended = requests.post(
        account + "/account/termination", json={"termination_date": "immediately"}, headers=browser, timeout=30
    )
    assert ended.status_code == 202, ended.text

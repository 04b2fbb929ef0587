"""Sign-in against the emulators, in-process: strangers cannot lock the owner out (device cookies),
and registered and unregistered addresses make the same backend round trips before the answer."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import flask
import pytest
from google.cloud.firestore_v1 import batch as fs_batch
from google.cloud.firestore_v1 import client as fs_client
from google.cloud.firestore_v1 import collection as fs_collection
from google.cloud.firestore_v1 import document as fs_document
from google.cloud.firestore_v1 import query as fs_query

from orderpally import audit, clients, events, web
from orderpally.access import guard as access
from orderpally.access import identity_toolkit, service, sessions
from orderpally.access.http import auth as auth_http
from support.identities import PASSWORD, create_customer
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("emulators", "mail_topic")
app = flask.Flask(__name__)
ORIGIN = "http://localhost:3000"
WRONG = "not the password at all"


@pytest.fixture
def mail_topic() -> None:
    """The topic mail requests go to (the integration tier has no function stack to create it)."""
    from google.api_core import exceptions as gexc

    from orderpally.messaging.requests import TOPIC

    with contextlib.suppress(gexc.AlreadyExists):
        clients.publisher().create_topic(name=events.topic_path(TOPIC))


def call(handler, path: str, body=None, cookies=None, address="198.51.100.1", method="POST"):
    """The handler's response, or its Problem rendered, for a browser on the frontend at `address`."""
    # As the load balancer passes it on (the stack's functions trust two hops of X-Forwarded-For).
    headers = {"Origin": ORIGIN, "X-Forwarded-For": f"{address}, 10.0.0.1"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        headers["X-CSRF-Token"] = cookies.get(access.CSRF_COOKIE, "")
    environ = {"REMOTE_ADDR": address}
    with app.test_request_context(path, method=method, json=body, headers=headers, environ_base=environ):
        try:
            return handler(flask.request)
        except web.Problem as problem:
            return problem.to_response(path)


def cookies_of(response) -> dict[str, str]:
    found = {}
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
    return found


def sign_in(email: str, password: str, cookies=None, address="198.51.100.1"):
    return call(auth_http.sign_in, "/auth/sign-in", {"email": email, "password": password}, cookies, address)


def test_strangers_guessing_from_many_addresses_do_not_lock_out_the_owners_trusted_browser():
    owner = create_customer()
    first = sign_in(owner.email, PASSWORD, address="192.0.2.10")
    assert first.status_code == 200
    browser = cookies_of(first)
    device = browser[sessions.DEVICE_COOKIE]
    set_cookie = next(h for h in first.headers.getlist("Set-Cookie") if h.startswith(sessions.DEVICE_COOKIE))
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="):
        assert attribute in set_cookie
    assert "Domain=" not in set_cookie  # a __Host- cookie
    assert owner.email not in device  # names no one

    # 20 addresses x 5 wrong passwords: under every per-address limit, over the per-account one.
    for n in range(20):
        for _ in range(5):
            assert sign_in(owner.email, WRONG, address=f"203.0.113.{n + 1}").status_code == 401
    locked = sign_in(owner.email, PASSWORD, address="192.0.2.99")
    assert locked.status_code == 429  # an untrusted browser still meets the per-account lockout

    # The owner's browser that signed in before: the password is checked, the lockout does not apply.
    again = sign_in(owner.email, PASSWORD, cookies={sessions.DEVICE_COOKIE: device}, address="192.0.2.10")
    assert again.status_code == 200, again.get_data(as_text=True)
    # ... nor skips the password check: a wrong one is refused, and only its own counter fills up.
    answers = [
        sign_in(owner.email, WRONG, cookies={sessions.DEVICE_COOKIE: device}).status_code
        for _ in range(service.SIGN_IN_FAILURES_PER_DEVICE.max_attempts + 1)
    ]
    assert answers[:-1] == [401] * service.SIGN_IN_FAILURES_PER_DEVICE.max_attempts
    assert answers[-1] == 429
    # A device cookie for another account is no help with this one.
    other = create_customer()
    other_device = cookies_of(sign_in(other.email, PASSWORD))[sessions.DEVICE_COOKIE]
    assert sign_in(owner.email, PASSWORD, cookies={sessions.DEVICE_COOKIE: other_device}).status_code == 429


def test_a_changed_password_or_sign_out_everywhere_ends_trust_in_earlier_browsers():
    owner = create_customer()
    old_device = cookies_of(sign_in(owner.email, PASSWORD))[sessions.DEVICE_COOKIE]
    time.sleep(1.1)  # Firebase revocation has whole-second granularity
    signed_in = cookies_of(sign_in(owner.email, PASSWORD, address="192.0.2.20"))
    for n in range(20):  # the owner is locked out everywhere but in trusted browsers
        for _ in range(5):
            sign_in(owner.email, WRONG, address=f"203.0.113.{n + 1}")
    # Password change checks the current password on the session's own counter: not blocked.
    changed = call(
        auth_http.change_password,
        "/auth/password",
        {"current_password": PASSWORD, "new_password": "a brand new long passphrase"},
        signed_in,
        address="192.0.2.20",
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    new_device = cookies_of(changed)[sessions.DEVICE_COOKIE]
    new_password = "a brand new long passphrase"
    assert sign_in(owner.email, new_password, cookies={sessions.DEVICE_COOKIE: new_device}).status_code == 200
    # The browser trusted before the change is trusted no more: the lockout applies to it.
    assert sign_in(owner.email, new_password, cookies={sessions.DEVICE_COOKIE: old_device}).status_code == 429


def test_successful_sign_ins_do_not_count_against_the_address():
    customer = create_customer()
    for _ in range(service.SIGN_IN_PER_ADDRESS.max_attempts + 5):  # a shared office address, say
        assert sign_in(customer.email, PASSWORD, address="192.0.2.30").status_code == 200


class Trace:
    """The backend round trips a request makes before its answer, in order (on the request's
    thread: what the Pub/Sub client does in its own after the answer is not waited for)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        self.recording: int | None = None
        for owner, name, label in (
            (fs_document.DocumentReference, "get", "firestore read"),
            (fs_document.DocumentReference, "create", "firestore write"),
            (fs_document.DocumentReference, "set", "firestore write"),
            (fs_document.DocumentReference, "update", "firestore write"),
            (fs_document.DocumentReference, "delete", "firestore write"),
            (fs_batch.WriteBatch, "commit", "firestore commit"),
            (fs_client.Client, "get_all", "firestore read"),
            (fs_query.Query, "stream", "firestore query"),
            (fs_collection.CollectionReference, "stream", "firestore query"),
            (fs_client.Client, "transaction", "firestore transaction"),
        ):
            self._wrap(monkeypatch, owner, name, label)
        from firebase_admin import _http_client

        self._wrap(monkeypatch, _http_client.HttpClient, "request", "auth admin")
        self._wrap(monkeypatch, identity_toolkit, "_post", "identity toolkit")
        self._wrap(monkeypatch, events.Publisher, "publish", "pubsub publish, waited for")

    def _wrap(self, monkeypatch, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def traced(*args, **kwargs):
            if self.recording == threading.get_ident():
                self.calls.append(label)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, traced)

    def of(self, run) -> list[str]:
        self.calls, self.recording = [], threading.get_ident()
        try:
            run()
        finally:
            self.recording = None
        return self.calls


def test_registered_and_unregistered_addresses_make_the_same_round_trips(monkeypatch):
    customers = [create_customer() for _ in range(3)]
    trace = Trace(monkeypatch)

    def nobody() -> str:
        return f"nobody-{uuid.uuid4().hex[:8]}@example.com"

    def sign_up(email: str):
        body = {"email": email, "password": PASSWORD, "display_name": "Tea", "kind": "store", "language": "en"}
        return call(auth_http.sign_up, "/auth/sign-up", body)

    def reset(email: str):
        return call(auth_http.request_password_reset, "/auth/password-reset", {"email": email})

    for what, run, expected in (
        ("failed sign-in", lambda email: sign_in(email, WRONG), 401),
        ("sign-up", sign_up, 202),
        ("password reset", reset, 202),
    ):
        for customer in customers:
            answers: list[int] = []

            def answer(email: str, run=run, answers=answers) -> None:
                answers.append(run(email).status_code)

            registered = trace.of(lambda c=customer, answer=answer: answer(c.email))
            unregistered = trace.of(lambda answer=answer: answer(nobody()))
            assert answers == [expected, expected]
            assert registered == unregistered, (what, registered, unregistered)

    # The registered ones' work was done all the same: trail entries (linked by the reader), mail.
    for customer in customers:
        actions = [e["action"] for e in audit.entries(clients.firestore_client(), customer.uid)]
        assert {"sign_in.failed", "password_reset.requested"} <= set(actions)
    from orderpally.messaging.requests import OUTBOX

    # Published without waiting; once Pub/Sub has it, it leaves the outbox.
    wait_for(lambda: not list(clients.firestore_client().collection(OUTBOX).limit(1).stream()))

"""Session cookies from the Auth emulator through orderpally.access.guard."""

from __future__ import annotations

import time
from datetime import timedelta

import flask
import pytest

from orderpally import clients, web
from orderpally.access import guard as access
from support.identities import create_identity, id_token

pytestmark = pytest.mark.usefixtures("emulators")
app = flask.Flask(__name__)
ORIGIN = "http://localhost:3000"


def request_with(cookie=None, method="GET", headers=None, csrf=None):
    cookies = []
    if cookie:
        cookies.append(f"{access.SESSION_COOKIE}={cookie}")
    if csrf:
        cookies.append(f"{access.CSRF_COOKIE}={csrf}")
    all_headers = {"Cookie": "; ".join(cookies), **(headers or {})}
    return app.test_request_context("/x", method=method, headers=all_headers)


def test_a_valid_session_cookie_yields_the_customer():
    alice = create_identity()
    with request_with(alice.session_cookie):
        principal = access.require_principal(flask.request)
    assert principal.account_id == alice.uid
    assert principal.kind == "customer"
    assert principal.email_verified


def test_staff_roles_come_from_custom_claims():
    admin = create_identity(roles=["admin"])
    with request_with(admin.session_cookie):
        assert access.require_staff(flask.request, "admin").kind == "staff"
        with pytest.raises(web.Problem) as refused:
            access.require_staff(flask.request, "security")
    assert refused.value.status == 403


def test_a_customer_is_not_staff():
    alice = create_identity()
    with request_with(alice.session_cookie), pytest.raises(web.Problem) as refused:
        access.require_staff(flask.request, "support")
    assert refused.value.status == 403


def test_revoked_and_forged_sessions_are_401():
    from firebase_admin import auth

    alice = create_identity()
    # Firebase compares whole seconds: only sessions issued before the revocation second end.
    time.sleep(1.1)
    auth.revoke_refresh_tokens(alice.uid, app=clients.firebase_app())
    for cookie in (alice.session_cookie, "forged.cookie.value"):
        with request_with(cookie), pytest.raises(web.Problem) as refused:
            access.require_principal(flask.request)
        assert refused.value.status == 401


def test_a_session_issued_in_the_revocation_second_ends_too():
    """Sign-out everywhere, or a staff role's removal, in the second a session was opened."""
    from firebase_admin import auth

    from orderpally.access import sessions

    for _ in range(5):
        time.sleep(1.02 - time.time() % 1)  # the start of a second, so both can fall within it
        alice = create_identity(roles=["admin"])
        issued = auth.verify_session_cookie(alice.session_cookie, app=clients.firebase_app())["iat"]
        started = int(time.time())
        sessions.revoke_all(clients.firebase_app(), alice.uid)
        if started == issued:
            break
    else:
        pytest.skip("could not open a session and start revoking within one second")
    with request_with(alice.session_cookie), pytest.raises(web.Problem) as refused:
        access.require_principal(flask.request)
    assert refused.value.status == 401
    # A session opened once revocation has returned is good.
    fresh = auth.create_session_cookie(id_token(alice.email), timedelta(hours=1), app=clients.firebase_app())
    with request_with(fresh):
        assert access.require_principal(flask.request).account_id == alice.uid


def test_disabled_account_is_401():
    from firebase_admin import auth

    alice = create_identity()
    auth.update_user(alice.uid, disabled=True, app=clients.firebase_app())
    with request_with(alice.session_cookie), pytest.raises(web.Problem) as refused:
        access.require_principal(flask.request)
    assert refused.value.status == 401


def test_anonymous_is_none_and_required_is_401():
    with request_with():
        assert access.authenticate(flask.request) is None
        with pytest.raises(web.Problem) as refused:
            access.require_principal(flask.request)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("headers", "csrf", "slug"),
    [
        ({}, "t0ken", "csrf-origin"),
        ({"Origin": "https://evil.test", "X-CSRF-Token": "t0ken"}, "t0ken", "csrf-origin"),
        ({"Origin": ORIGIN}, "t0ken", "csrf-token"),
        ({"Origin": ORIGIN, "X-CSRF-Token": "other"}, "t0ken", "csrf-token"),
        ({"Origin": ORIGIN, "X-CSRF-Token": ""}, None, "csrf-token"),
    ],
)
def test_state_changing_cookie_requests_need_origin_and_token(headers, csrf, slug):
    alice = create_identity()
    with request_with(alice.session_cookie, "POST", headers, csrf), pytest.raises(web.Problem) as refused:
        access.require_principal(flask.request)
    assert refused.value.status == 403
    assert refused.value.slug == slug


def test_state_changing_request_with_origin_and_token_passes():
    alice = create_identity()
    with request_with(alice.session_cookie, "POST", {"Origin": ORIGIN, "X-CSRF-Token": "t0ken"}, "t0ken"):
        assert access.require_principal(flask.request).account_id == alice.uid


def test_a_bearer_token_without_a_verifier_is_refused():
    with app.test_request_context("/x", headers={"Authorization": "Basic abc"}), pytest.raises(web.Problem) as refused:
        access.authenticate(flask.request)
    assert refused.value.status == 401

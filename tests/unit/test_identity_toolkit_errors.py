"""Identity Platform's answers: the user's credentials, or this service's configuration.

Google answers a bad or restricted API key, a sign-in method that is off or a project
without Identity Platform with a 400 too. Those are server-side faults: no failed sign-in
on the customer's trail, no failure counted against their limits, and a 503.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import flask
import pytest
import requests

from orderpally import web
from orderpally.access import identity_toolkit, service

API_KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
}


def _answer(status: int, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = flask.json.dumps(body).encode()
    return response


def _google_says(monkeypatch: pytest.MonkeyPatch, status: int, body: dict[str, Any]) -> None:
    monkeypatch.setattr(requests, "post", lambda *args, **kwargs: _answer(status, body))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, API_KEY_INVALID),
        (400, {"error": {"code": 400, "message": "CONFIGURATION_NOT_FOUND"}}),
        (400, {"error": {"code": 400, "message": "OPERATION_NOT_ALLOWED"}}),
        (400, {"error": {"code": 400, "message": "INVALID_CUSTOM_TOKEN"}}),
        (400, {"error": {"code": 400, "message": "API key expired. Please renew the API key."}}),
        (403, {"error": {"code": 403, "message": "Requests to this API are blocked.", "status": "PERMISSION_DENIED"}}),
    ],
)
def test_configuration_errors_are_not_wrong_credentials(monkeypatch, status, body):
    _google_says(monkeypatch, status, body)
    with pytest.raises(identity_toolkit.IdentityMisconfigured):
        identity_toolkit.sign_in_with_password("someone@example.com", "a password")


@pytest.mark.parametrize(
    "message",
    ["EMAIL_NOT_FOUND", "INVALID_PASSWORD", "INVALID_LOGIN_CREDENTIALS", "TOO_MANY_ATTEMPTS_TRY_LATER : Access"],
)
def test_credential_errors_stay_wrong_credentials(monkeypatch, message):
    _google_says(monkeypatch, 400, {"error": {"code": 400, "message": message}})
    with pytest.raises(identity_toolkit.WrongCredentials) as caught:
        identity_toolkit.sign_in_with_password("someone@example.com", "a password")
    assert not isinstance(caught.value, identity_toolkit.IdentityMisconfigured)


def test_a_disabled_user_is_still_told_apart_for_the_code(monkeypatch):
    _google_says(monkeypatch, 400, {"error": {"code": 400, "message": "USER_DISABLED"}})
    with pytest.raises(identity_toolkit.UserDisabled):
        identity_toolkit.sign_in_with_password("someone@example.com", "a password")


def test_a_rejected_api_key_is_a_503_with_no_trail_entry_and_no_failure_counted(monkeypatch):
    _google_says(monkeypatch, 400, API_KEY_INVALID)
    counted: list[str] = []
    trail: list[str] = []
    monkeypatch.setattr(service.limiter, "hit_all", lambda db, limits, now: counted.append("hit"))
    monkeypatch.setattr(service.limiter, "refund_all", lambda db, limits, now: counted.append("refund"))
    monkeypatch.setattr(service, "uid_for", lambda ports, email: "uid-1")
    monkeypatch.setattr(service, "record_event", lambda db, address, uid, action, *a, **k: trail.append(action))
    ports = service.Ports(
        db=object(),
        auth_app=None,
        identity=identity_toolkit.IdentityToolkit(None),
        pepper=b"p" * 32,
        publisher=object(),
        publish_mail=lambda mail: None,
    )
    with pytest.raises(web.Problem) as caught:
        service.verify_password(ports, "someone@example.com", "a password", None, None, datetime.now(UTC))
    problem = caught.value
    assert problem.status == 503
    assert trail == []
    assert counted == ["hit", "refund"]  # the attempt's failure counters are given back

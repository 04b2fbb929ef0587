"""Bodies refused before any backend is asked: media type, size, JSON, fields. No emulators run
here, so a refusal that needed one would fail, not pass."""

from __future__ import annotations

import json

import pytest

from support.identities import FRONTEND_ORIGIN
from support.payloads import incident_report as report

# A value no answer may repeat: refused fields may hold passwords.
MARKER = "Zq-marker-7f3a9c"


def sign_up(**overrides) -> dict:
    return {
        "email": "shop@example.com",
        "password": "a long and unusual passphrase",
        "display_name": "Tea Shop",
        "kind": "store",
        "language": "en",
        **overrides,
    }


def is_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = response.json
    assert body["type"] == f"urn:orderpally:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == response.request.path
    return body


# From tests/e2e/test_incidents_endpoints.py: the limits are web.parse_json's, before any backend.
def test_oversized_and_non_json_bodies_are_refused(http_function):
    incidents = http_function("incidents")
    url = "/incidents"
    assert incidents.post(url, data="x" * 70000, headers={"Content-Type": "application/json"}).status_code == 413
    assert (
        incidents.post(
            url, data="category=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ).status_code
        == 415
    )


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "category=x"),
        ("text/plain", json.dumps(report())),
        (None, json.dumps(report())),
    ],
)
def test_a_body_that_is_not_json_is_415(http_function, content_type, data):
    headers = {"Content-Type": content_type} if content_type else {}
    body = is_problem(
        http_function("incidents").post("/incidents", data=data, headers=headers), 415, "unsupported-media-type"
    )
    assert "application/json" in body["detail"]


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_64_kib_is_413_whether_or_not_its_length_is_declared(http_function, declared):
    data = json.dumps(report(description="x" * 70000))
    # Undeclared: a chunked body, as the WSGI server hands it on (no length, the stream ends itself).
    chunked = {} if declared else {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
    response = http_function("incidents").post(
        "/incidents", data=data, headers={"Content-Type": "application/json"}, environ_overrides=chunked
    )
    assert is_problem(response, 413, "body-too-large")["detail"] == "The body may be at most 65536 bytes."


@pytest.mark.parametrize("data", ["{", '{"category": ', "[1, 2", "1" * 5000, "[" * 60000])
def test_malformed_json_is_400(http_function, data):
    response = http_function("incidents").post("/incidents", data=data, headers={"Content-Type": "application/json"})
    assert is_problem(response, 400, "malformed-json")["detail"] == "The body is not valid JSON."


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (report(category=f"ufo-{MARKER}"), "category"),
        (report(description=f"<script>{MARKER}</script> my shop was hacked"), "description"),
        (report(references=[f"../../{MARKER}"]), "references.0"),
        (report(contact_email=f"{MARKER}@@example"), "contact_email"),
        ({**report(), "severity": MARKER}, "severity"),
        ({key: value for key, value in report().items() if key != "category"}, "category"),
    ],
)
def test_an_invalid_report_is_422_naming_the_field_and_never_echoing_the_value(http_function, body, field):
    response = http_function("incidents").post("/incidents", json=body)
    problem = is_problem(response, 422, "validation-error")
    assert problem["field"] == field
    assert problem["detail"].startswith(f"{field}: ")
    assert problem["errors"][0]["field"] == field
    assert MARKER not in response.get_data(as_text=True)


def test_a_bad_idempotency_key_is_422_naming_the_header(http_function):
    response = http_function("incidents").post("/incidents", json=report(), headers={"Idempotency-Key": "short"})
    assert is_problem(response, 422, "validation-error")["field"] == "Idempotency-Key"


def test_a_sign_up_with_a_common_password_names_the_field_and_not_the_password(http_function):
    response = http_function("auth").post(
        "/auth/sign-up", json=sign_up(password="password123"), headers={"Origin": FRONTEND_ORIGIN}
    )
    assert response.status_code == 422
    assert response.json["field"] == "password"
    assert "password123" not in response.get_data(as_text=True)


@pytest.mark.parametrize("origin", [None, "https://evil.example"])
def test_a_sign_in_from_no_frontend_is_refused_before_anything_else(http_function, origin):
    headers = {"Origin": origin} if origin else {}
    # The body is not even JSON: the origin is checked first.
    response = http_function("auth").post("/auth/sign-in", data="{", headers=headers)
    assert is_problem(response, 403, "csrf-origin")

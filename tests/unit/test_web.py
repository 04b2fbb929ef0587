from __future__ import annotations

import json

import flask
import pydantic
import pytest
from google.api_core import exceptions as gexc

from orderpally import web

app = flask.Flask(__name__)


class SignUp(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    email: str = pydantic.Field(max_length=100)
    password: str = pydantic.Field(min_length=8)


def call(handler, *, method="POST", path="/x", data=None, content_type="application/json", headers=None):
    with app.test_request_context(path, method=method, data=data, content_type=content_type, headers=headers or {}):
        return web.serve(flask.request, handler)


def parse_signup(request):
    body = web.parse_json(request, SignUp)
    return web.json_response({"email": body.email}, 201)


def problem(response):
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_data())
    assert body["status"] == response.status_code
    assert body["type"].startswith(web.PROBLEM_TYPE_PREFIX)
    return body


def test_valid_body_is_parsed():
    response = call(parse_signup, data=json.dumps({"email": "a@b.test", "password": "long enough"}))
    assert response.status_code == 201
    assert json.loads(response.get_data()) == {"email": "a@b.test"}


def test_wrong_content_type_is_415():
    response = call(parse_signup, data="email=a", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert problem(response)["type"].endswith("unsupported-media-type")


def test_malformed_json_is_400():
    response = call(parse_signup, data="{not json")
    assert response.status_code == 400
    assert problem(response)["type"].endswith("malformed-json")


@pytest.mark.parametrize(
    "body",
    ["[" * 30000 + "]" * 30000, '{"email": 1' + "0" * 5000 + ', "password": "x"}'],
)
def test_json_that_python_cannot_parse_is_400_not_500(body):
    response = call(parse_signup, data=body)
    assert response.status_code == 400
    assert problem(response)["type"].endswith("malformed-json")


def test_oversized_body_is_413():
    response = call(parse_signup, data=json.dumps({"email": "a" * (web.MAX_JSON_BYTES + 1), "password": "x"}))
    assert response.status_code == 413


def test_validation_error_names_the_field_and_never_echoes_the_value():
    secret = "short1"
    response = call(parse_signup, data=json.dumps({"email": "a@b.test", "password": secret}))
    assert response.status_code == 422
    body = problem(response)
    assert body["field"] == "password"
    assert secret not in response.get_data(as_text=True)


def test_unknown_fields_are_refused():
    response = call(parse_signup, data=json.dumps({"email": "a@b.test", "password": "long enough", "admin": True}))
    assert response.status_code == 422
    assert problem(response)["field"] == "admin"


def test_backend_outage_is_503_with_retry_after():
    def failing(request):
        raise gexc.ServiceUnavailable("firestore down at 10.0.0.1")

    response = call(failing, method="GET")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "10.0.0.1" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "lost",
    [
        gexc.InvalidArgument("Transaction is invalid or closed."),
        gexc.InvalidArgument("The referenced transaction has expired or is no longer valid."),
        ValueError("Failed to commit transaction in 5 attempts."),
    ],
)
def test_a_transaction_lost_to_an_outage_or_contention_is_503(lost):
    def failing(request):
        raise lost

    assert call(failing, method="GET").status_code == 503


class CutOffFirestoreApi:
    """The transport under a real Firestore client whose connection dropped mid-request."""

    def begin_transaction(self, **_):
        raise gexc.DeadlineExceeded("begin cut off")

    def rollback(self, **_):
        raise AssertionError("nothing began, so nothing is rolled back")


def test_a_transaction_whose_begin_is_cut_off_is_503():
    # The library's rollback then raises ValueError("... no transaction ID ...") over the cut.
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    client._firestore_api_internal = CutOffFirestoreApi()

    @firestore.transactional
    def write(transaction):
        transaction.set(client.document("c/d"), {"a": 1})

    def failing(request):
        write(client.transaction())

    with pytest.raises(ValueError, match="no transaction ID"):
        failing(None)
    assert call(failing, method="GET").status_code == 503


def test_other_invalid_arguments_are_bugs():
    def failing(request):
        raise gexc.InvalidArgument("Property name is reserved.")

    assert call(failing, method="GET").status_code == 500


def test_bug_is_500_problem_without_details():
    def buggy(request):
        raise ValueError("secret internals: password=hunter2")

    response = call(buggy, method="GET")
    assert response.status_code == 500
    problem(response)
    assert "hunter2" not in response.get_data(as_text=True)


def test_router_404_and_405_with_allow():
    router = web.Router()

    @router.route("/things/<thing_id>", methods=["GET"])
    def get_thing(request, thing_id):
        return web.json_response({"id": thing_id})

    with app.test_request_context("/things/42", method="GET"):
        assert json.loads(router.dispatch(flask.request).get_data()) == {"id": "42"}
    with app.test_request_context("/nothing", method="GET"):
        assert router.dispatch(flask.request).status_code == 404
    with app.test_request_context("/things/42", method="DELETE"):
        response = router.dispatch(flask.request)
        assert response.status_code == 405
        assert "GET" in response.headers["Allow"]
    assert ("/things/<thing_id>", {"GET"}) in router.rules()


def test_responses_are_not_cached_and_not_sniffed():
    response = web.json_response({"a": 1})
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("status", [400, 404, 409, 429])
def test_problem_keeps_its_status_and_headers(status):
    response = web.Problem(status, "x", "X", headers={"Retry-After": "3"}).to_response("/p")
    assert response.status_code == status
    assert response.headers["Retry-After"] == "3"
    assert problem(response)["instance"] == "/p"


FRONTEND = "http://localhost:3000"  # the local default of FRONTEND_ORIGINS


def answered(request):
    return web.json_response({"ok": True})


def test_a_preflight_from_a_frontend_allows_its_methods_and_headers_with_credentials():
    response = call(
        answered,
        method="OPTIONS",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-csrf-token",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-CSRF-Token" in response.headers["Access-Control-Allow-Headers"]
    assert "DELETE" in response.headers["Access-Control-Allow-Methods"]
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    ("origin", "method", "headers", "slug"),
    [
        ("https://evil.example", "POST", "content-type", "cors-origin"),
        ("null", "POST", "content-type", "cors-origin"),
        (FRONTEND, "TRACE", "", "cors-request"),
        (FRONTEND, "GET", "authorization", "cors-request"),  # API keys are for servers
    ],
)
def test_other_preflights_are_403_problems_without_cors_headers(origin, method, headers, slug):
    asked = {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
    response = call(answered, method="OPTIONS", headers=asked)
    assert response.status_code == 403
    assert problem(response)["type"].endswith(slug)
    assert ("Access-Control-Allow-Methods" in response.headers) is False
    assert (response.headers.get("Access-Control-Allow-Origin") == origin) is (origin == FRONTEND)


def test_answers_and_problems_name_a_frontend_origin_and_no_other():
    ok = call(answered, method="GET", headers={"Origin": FRONTEND})
    assert ok.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in ok.headers["Access-Control-Expose-Headers"]
    refused = call(parse_signup, data="{}", headers={"Origin": FRONTEND})
    assert refused.status_code == 422
    assert refused.headers["Access-Control-Allow-Origin"] == FRONTEND  # the frontend can read why
    foreign = call(answered, method="GET", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert "Origin" in foreign.headers["Vary"]
    plain = call(answered, method="GET")
    assert "Access-Control-Allow-Origin" not in plain.headers


def test_an_empty_answer_has_no_content_type():
    response = call(lambda request: flask.Response(status=204), method="DELETE", data=None)
    assert response.status_code == 204
    assert "Content-Type" not in response.headers

"""Every HTTP function of the catalogue as its own app: routing, problem documents, security
headers and CORS, the same for each (web.py's rules, as main.py wires them to each function)."""

from __future__ import annotations

import pytest

import local_stack

HTTP_FUNCTIONS = [e.name for e in local_stack.load_catalogue() if e.kind == "http"]

# One route of each function, with the methods it takes as Allow lists them.
A_ROUTE = {
    "health": ("/health", "GET, HEAD"),
    "auth": ("/auth/sign-up", "POST"),
    "account": ("/account/api-keys", "GET, HEAD, POST"),
    "staff": ("/staff/incidents", "GET, HEAD"),
    "incidents": ("/incidents", "POST"),
    "well-known": ("/.well-known/security.txt", "GET, HEAD"),
    "notices": ("/notices", "GET, HEAD"),
}
FOREIGN_ORIGINS = ["https://evil.example", "http://localhost:3001", "null"]


def prefix(name: str) -> str:
    return next(e for e in local_stack.load_catalogue() if e.name == name).trigger["path_prefix"]


def test_every_http_function_has_a_route_here():
    assert sorted(A_ROUTE) == sorted(HTTP_FUNCTIONS)


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_an_unknown_path_is_a_problem_document_not_cached_or_sniffed(http_function, name):
    path = prefix(name) + "/no-such-thing/at/all"
    response = http_function(name).get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json == {
        "type": "urn:orderpally:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": "No such resource.",
        "instance": path,
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_a_function_serves_no_other_functions_routes(http_function, name):
    client = http_function(name)
    for other, (path, _) in A_ROUTE.items():
        if other != name:
            response = client.get(path)
            assert response.status_code == 404, f"{name} answers {path} of {other}"
            assert response.json["type"] == "urn:orderpally:problem:not-found"


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_a_wrong_method_is_405_naming_the_allowed_ones(http_function, name):
    path, allowed = A_ROUTE[name]
    response = http_function(name).put(path, json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json == {
        "type": "urn:orderpally:problem:method-not-allowed",
        "title": "Method not allowed",
        "status": 405,
        "detail": f"Use one of: {allowed}.",
        "instance": path,
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def preflight(client, path: str, origin: str, headers: str = "Content-Type, X-CSRF-Token"):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
    )


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_a_frontends_preflight_is_allowed_with_credentials(stack_config, http_function, name):
    path, _ = A_ROUTE[name]
    client = http_function(name)
    assert len(stack_config.frontend_origins) >= 2
    for origin in stack_config.frontend_origins:
        response = preflight(client, path, origin)
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-CSRF-Token, Idempotency-Key"
        assert response.headers["Access-Control-Max-Age"] == "600"
        assert "Origin" in response.headers["Vary"]
        assert "Content-Type" not in response.headers
        assert response.data == b""


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_a_foreign_origins_preflight_is_a_403_problem_without_cors_headers(http_function, name):
    path, _ = A_ROUTE[name]
    client = http_function(name)
    for origin in FOREIGN_ORIGINS:
        response = preflight(client, path, origin)
        assert response.status_code == 403
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json["type"] == "urn:orderpally:problem:cors-origin"
        assert not [name for name, _ in response.headers if name.startswith("Access-Control-")]
        assert "Origin" in response.headers["Vary"]


def test_a_frontend_may_not_send_an_api_key_across_origins(stack_config, http_function):
    response = preflight(
        http_function("account"), "/account/api-keys", stack_config.frontend_origins[0], "Authorization"
    )
    assert response.status_code == 403
    assert response.json["type"] == "urn:orderpally:problem:cors-request"
    assert "Access-Control-Allow-Headers" not in response.headers


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_answers_name_a_frontend_origin_and_no_other(stack_config, http_function, name):
    client = http_function(name)
    path = prefix(name) + "/no-such-thing/at/all"
    origin = stack_config.frontend_origins[0]
    ours = client.get(path, headers={"Origin": origin})
    assert ours.headers["Access-Control-Allow-Origin"] == origin
    assert ours.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in ours.headers["Access-Control-Expose-Headers"]
    for foreign in FOREIGN_ORIGINS:
        theirs = client.get(path, headers={"Origin": foreign})
        assert theirs.status_code == 404
        assert not [name for name, _ in theirs.headers if name.startswith("Access-Control-")]
        assert "Origin" in theirs.headers["Vary"]

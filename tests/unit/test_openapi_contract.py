"""Every route a public HTTP function serves is in functions/openapi.yaml, and the reverse."""

from __future__ import annotations

import re

import yaml

import local_stack
import main

OPENAPI = local_stack.FUNCTIONS_DIR / "openapi.yaml"


def served_routes() -> set[tuple[str, str]]:
    routes = set()
    for router in main.ROUTERS.values():
        for path, methods in router().rules():
            openapi_path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", path)
            routes |= {(openapi_path, method.lower()) for method in methods}
    return routes


def documented_routes() -> set[tuple[str, str]]:
    spec = yaml.safe_load(OPENAPI.read_text())
    assert spec["openapi"].startswith("3.1")
    return {(path, method) for path, item in spec["paths"].items() for method in item if method != "parameters"}


def test_contract_and_routes_match():
    assert served_routes() == documented_routes()


def test_every_served_route_is_under_its_functions_path_prefix():
    prefixes = [e.trigger["path_prefix"] for e in local_stack.load_catalogue() if e.kind == "http"]
    for path, _ in served_routes():
        assert any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes), path


def test_every_operation_declares_problem_responses():
    spec = yaml.safe_load(OPENAPI.read_text())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "default" in operation["responses"] or any(
                code.startswith("4") for code in operation["responses"]
            ), f"{method} {path}"


def test_every_json_body_may_be_answered_with_malformed_json():
    spec = yaml.safe_load(OPENAPI.read_text())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                assert "400" in operation["responses"], f"{method} {path}"

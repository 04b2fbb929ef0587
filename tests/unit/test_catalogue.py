"""The catalogue and functions/main.py must name the same entry points."""

from __future__ import annotations

import ast

import pytest

import local_stack

MAIN = local_stack.FUNCTIONS_DIR / "main.py"
DECORATORS = {"http": "http", "cloud_event": "cloudevent"}


def registered_entry_points() -> dict[str, str]:
    """Top-level functions in main.py decorated by functions_framework, with their signature type."""
    tree = ast.parse(MAIN.read_text())
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Attribute)
                and isinstance(decorator.value, ast.Name)
                and decorator.value.id == "functions_framework"
                and decorator.attr in DECORATORS
            ):
                found[node.name] = DECORATORS[decorator.attr]
    return found


def test_every_catalogue_entry_point_is_registered_in_main_with_its_signature_type():
    registered = registered_entry_points()
    for entry in local_stack.load_catalogue():
        assert entry.entry_point in registered, f"{entry.name}: {entry.entry_point} is not in main.py"
        assert registered[entry.entry_point] == entry.signature_type, entry.name


def test_every_entry_point_in_main_is_in_the_catalogue():
    named = {entry.entry_point for entry in local_stack.load_catalogue()}
    assert set(registered_entry_points()) <= named, set(registered_entry_points()) - named


def test_catalogue_entries_are_well_formed():
    entries = local_stack.load_catalogue()
    assert entries, "the catalogue is empty"
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    prefixes = []
    for entry in entries:
        assert entry.kind in {"http", "topic", "schedule"}, entry.name
        assert 1 <= entry.timeout_seconds <= 540, entry.name
        assert entry.max_instances >= 1, entry.name
        if entry.kind == "http":
            assert entry.trigger["path_prefix"].startswith("/"), entry.name
            prefixes.append(entry.trigger["path_prefix"])
        elif entry.kind == "topic":
            assert len(entry.trigger["topic"]) >= 3, entry.name
        else:
            from croniter import croniter

            assert croniter.is_valid(entry.trigger["cron"]), entry.name
            assert entry.trigger["time_zone"] == "Asia/Taipei", entry.name
    assert len(prefixes) == len(set(prefixes)), "two http functions share a path prefix"


@pytest.mark.parametrize("kind", ["http", "topic", "schedule"])
def test_every_trigger_path_is_exercised(kind):
    assert any(e.kind == kind for e in local_stack.load_catalogue())


def test_each_http_function_serves_its_catalogue_path_prefix():
    import main

    http = {e.entry_point: e.trigger["path_prefix"] for e in local_stack.load_catalogue() if e.kind == "http"}
    assert http == main.PATH_PREFIXES
    assert set(main.ROUTERS) == set(http)


def test_every_declared_route_is_served_by_exactly_one_function():
    import importlib

    import main

    modules = ["access.http.auth", "access.http.facebook", "access.http.account", "lifecycle.http"]
    modules += ["records.http", "incidents.http", "notices.http", "trust.http", "checkpoints.http"]
    declared = [
        (r.path, m) for name in modules for r in importlib.import_module(f"orderpally.{name}").ROUTES for m in r.methods
    ]
    served = [(path, m) for router in main.ROUTERS.values() for path, methods in router().rules() for m in methods]
    assert sorted(served) == sorted([*declared, ("/health", "GET")])

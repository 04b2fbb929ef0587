"""Every Firestore collection the code writes or reads is accounted for in the data map."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import local_stack
from orderpally.lifecycle import data_map

PACKAGE = local_stack.FUNCTIONS_DIR / "orderpally"
PATH_METHODS = {"collection", "collection_group", "document"}


def _first_segment(node: ast.expr, namespace: dict) -> str | None:
    """The collection id a path argument starts with, when it can be known without running code."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split("/", 1)[0]
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head.split("/", 1)[0] if "/" in head else None
    if isinstance(node, ast.Name | ast.Attribute):
        try:
            value = eval(compile(ast.Expression(node), "<path>", "eval"), namespace)  # noqa: S307 - names only
        except Exception:  # noqa: BLE001 - a runtime value (a variable), not a constant
            return None
        return value.split("/", 1)[0] if isinstance(value, str) else None
    return None


def collections_in_code() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        namespace = vars(importlib.import_module(module_name))
        for node in ast.walk(ast.parse(path.read_text())):
            is_path_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if is_path_call and node.func.attr in PATH_METHODS and node.args:
                name = _first_segment(node.args[0], namespace)
                if name:
                    found.setdefault(name, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_every_collection_the_code_touches_is_in_the_data_map():
    known = data_map.load().collection_ids()
    missing = {name: where for name, where in collections_in_code().items() if name not in known}
    assert missing == {}, f"add these to functions/orderpally/lifecycle/data_map.yaml: {missing}"


def test_the_scan_finds_collections_at_all():
    found = collections_in_code()
    assert {"accounts", "event_ledger", "deletion_jobs"} <= set(found)


def test_data_map_file_lives_in_the_bundle():
    assert Path(data_map.DATA_MAP_FILE).is_relative_to(local_stack.FUNCTIONS_DIR)

"""The import rules of the house (#16), read from the source with `ast`.

- no import circles among the functions' modules;
- the shared core never imports a capability;
- no capability imports another capability's HTTP module;
- no topic or schedule function imports an HTTP module;
- no HTTP module touches Firestore collections itself;
- in a capability, only its `store.py` touches Firestore (the data-map walkers read through
  lifecycle's);
- in the shared mail and archive packages, only their `store.py` touches Firestore;
- across capabilities, only services and rules are imported (and the request guard);
- only the composition edge (`main.py`, the HTTP modules, the request guard) uses a
  `clients` factory, called or handed on: every other module, the core's included, is given
  its clients (the Pub/Sub publisher too, as an `events.Publisher`);
- only `accounts.py` names the `accounts` collection.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
CATALOGUE = FUNCTIONS.parent / "infra" / "functions.yaml"
CORE = {
    "web",
    "config",
    "clients",
    "events",
    "audit",
    "structured_logging",
    "accounts",
    "leases",
    "limiter",
    "outbox",
    "fields",
    "unit_of_work",
}
# Shared by every capability, like the core: mail requests, the mail outbox and deliveries;
# archive quotas and builds (content exports and records requests).
SHARED_PACKAGES = {"messaging", "archives"}


def module_name(path: Path) -> str:
    parts = path.relative_to(FUNCTIONS).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in [*sorted((FUNCTIONS / "orderpally").rglob("*.py")), FUNCTIONS / "main.py"]}


def imports_in(tree: ast.AST) -> set[str]:
    """The project's modules imported anywhere in `tree` (functions' lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {name for name in found if name in MODULES}


GRAPH = {name: imports_in(ast.parse(path.read_text())) - {name} for name, path in MODULES.items()}


def capability(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def is_http(module: str) -> bool:
    """A capability's `http` module, or a module of its `http` package (access has one per function)."""
    return "http" in module.split(".")[2:]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert circles(GRAPH) == []


def test_the_shared_core_imports_no_capability():
    upward = {(m, t) for m in GRAPH if m.split(".")[-1] in CORE and capability(m) is None for t in GRAPH[m]}
    assert {(m, t) for m, t in upward if capability(t) not in (None, *SHARED_PACKAGES)} == set()


def test_no_capability_imports_another_capabilitys_http_module():
    crossing = {
        (m, t)
        for m, targets in GRAPH.items()
        for t in targets
        if capability(m) and capability(t) and capability(m) != capability(t) and is_http(t)
    }
    assert crossing == set()


def event_functions() -> dict[str, ast.FunctionDef]:
    entries = yaml.safe_load(CATALOGUE.read_text())["functions"].values()
    kinds = {e["entry_point"]: e["trigger"]["kind"] for e in entries}
    tree = ast.parse((FUNCTIONS / "main.py").read_text())
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and kinds.get(node.name) in ("topic", "schedule")
    }


def test_topic_and_schedule_functions_import_no_http_module():
    functions = event_functions()
    assert len(functions) >= 10  # the catalogue's topic and schedule entry points were found
    using = {(name, module) for name, node in functions.items() for module in imports_in(node) if is_http(module)}
    assert using == set()


def test_http_modules_reach_firestore_only_through_stores():
    touching = {name for name, path in MODULES.items() if is_http(name) and "collection(" in path.read_text()}
    assert touching == set()


# A service may open a batch: the unit of work the stores, audit.stage and stage_email write into.
FIRESTORE = re.compile(r"\.collection\(|\.collection_group\(|\.transactional\b|\.transaction\(\)")


def test_in_a_capability_only_its_store_touches_firestore():
    touching = {
        name
        for name, path in MODULES.items()
        if capability(name) not in (None, *SHARED_PACKAGES)
        and name.split(".")[-1] != "store"
        and FIRESTORE.search(path.read_text())
    }
    assert touching == set()


# The shared packages are not capabilities, but keep the same rule: the delivery ledger and the
# mail outbox are `messaging.store`'s alone, the archive quotas and build fields `archives.store`'s
# (the other modules write through them, batches included).
SHARED_FIRESTORE = re.compile(rf"{FIRESTORE.pattern}|\.document\(|\.batch\(\)|\bref\.(update|set|create|delete)\(")


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("messaging", {"delivery", "requests", "store"}),
        ("archives", {"rules", "service", "store"}),
    ],
)
def test_in_a_shared_package_only_its_store_touches_firestore(package, expected):
    modules = {name for name in MODULES if capability(name) == package}
    assert {f"orderpally.{package}.{module}" for module in expected} <= modules
    outside_store = {name for name in modules if name.split(".")[-1] != "store"}
    touching = {name for name in outside_store if SHARED_FIRESTORE.search(MODULES[name].read_text())}
    assert touching == set()


# What one capability may import of another: its use cases and its pure rules. The data map is
# lifecycle's published description of where data lives (pure models), which the trust report
# shows; the request guard and the principal are how every HTTP module authenticates.
PUBLISHED = {"service", "rules", "data_map"}
REQUEST_GUARD = {"orderpally.access.guard", "orderpally.access.principal"}


def across_capabilities(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports from one capability into another's modules other than the published ones."""
    return {
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if capability(m)
        and capability(t) not in (None, capability(m), *SHARED_PACKAGES)
        and t.split(".")[-1] not in PUBLISHED
        and not (is_http(m) and t in REQUEST_GUARD)
    }


def test_capabilities_use_one_another_through_services_and_rules():
    assert across_capabilities(GRAPH) == set()


def test_the_crossing_finder_finds_a_reach_into_another_store():
    graph = {"orderpally.trust.service": {"orderpally.lifecycle.store", "orderpally.lifecycle.service"}}
    assert across_capabilities(graph) == {("orderpally.trust.service", "orderpally.lifecycle.store")}


# What orderpally.clients builds once per process: the composition edge (HTTP modules, main.py,
# the request guard) calls these and passes the clients in.
CLIENT_FACTORIES = {
    "firestore_client",
    "publisher",
    "storage_client",
    "firebase_app",
    "smtp_connection",
    "url_signing_credentials",
    "storage_download_endpoint",
}


def factory_uses(tree: ast.AST) -> set[str]:
    """The `clients` factories `tree` calls or hands on (`events.Publisher(clients.publisher)`)."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "clients"
        and node.attr in CLIENT_FACTORIES
    }


def is_composition_edge(module: str) -> bool:
    return module == "main" or module == "orderpally.access.guard" or (capability(module) and is_http(module))


def test_only_the_composition_edge_makes_clients():
    using = {
        (name, use)
        for name, path in MODULES.items()
        if not is_composition_edge(name) and name != "orderpally.clients"
        for use in factory_uses(ast.parse(path.read_text()))
    }
    assert using == set()


def test_the_composition_edge_was_found():
    edge = {name for name in MODULES if is_composition_edge(name)}
    assert {"main", "orderpally.incidents.http", "orderpally.access.http", "orderpally.access.guard"} <= edge


@pytest.mark.parametrize(
    "source",
    [
        "from orderpally import clients\nclients.firestore_client().collection('x')",
        "from orderpally import clients, events\nevents.Publisher(clients.publisher)",
    ],
)
def test_the_factory_finder_finds_a_use(source):
    assert len(factory_uses(ast.parse(source))) == 1


def test_only_accounts_names_the_accounts_collection():
    naming = {
        name
        for name, path in MODULES.items()
        if name != "orderpally.accounts"
        and re.search(r"\bACCOUNTS\b|collection\([\"']accounts[\"']\)", path.read_text())
    }
    assert naming == set()


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(graph, expected):
    assert circles(graph) == expected

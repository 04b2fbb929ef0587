"""Which Firestore queries production can serve with the indexes Terraform declares.

The emulator serves every query; production refuses one that needs a composite
index (or a collection-group single-field index) that does not exist, with
FAILED_PRECONDITION "The query requires an index". The local IAM proxy
(iam_proxy.py) records each query and asks `missing_index` about it, so a query
that would fail after deploy fails locally first.

The rules, from Firestore's documentation (query-data/index-overview, queries,
indexing), on plain data so they can be unit-tested:

- Every field has automatic collection-scope single-field indexes (ascending,
  descending, array-contains) unless a `google_firestore_field` exemption
  replaces them (`index_config {}` removes all). Collection-group scope has
  none unless an exemption adds them. `__name__` is always indexed.
- Equality-only queries (`==`, `in`, `array-contains[-any]`, `IS NULL`) are
  served by merging the single-field indexes of their fields.
- A query whose only order (explicit, or implied by its inequality filters) is
  on one field and that has no equality filter needs that field's single-field
  index.
- Anything else needs composite indexes: equality fields (any order, each in
  its mode) then the query's order fields in order with their directions, or
  all directions reversed; `__name__` last is implied. Composite indexes with
  the same order suffix can be merged to cover the equality fields.
- An OR query is served when each of its disjunctions is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASCENDING, DESCENDING, CONTAINS = "ASCENDING", "DESCENDING", "CONTAINS"
COLLECTION, COLLECTION_GROUP = "COLLECTION", "COLLECTION_GROUP"
NAME = "__name__"

# Operators as the StructuredQuery proto names them.
EQUALITY = {"EQUAL", "IN", "IS_NULL", "IS_NAN"}
ARRAY_EQUALITY = {"ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"}
INEQUALITY = {
    "LESS_THAN",
    "LESS_THAN_OR_EQUAL",
    "GREATER_THAN",
    "GREATER_THAN_OR_EQUAL",
    "NOT_EQUAL",
    "NOT_IN",
    "IS_NOT_NULL",
    "IS_NOT_NAN",
}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # one of EQUALITY | ARRAY_EQUALITY | INEQUALITY


@dataclass(frozen=True)
class Junction:
    op: str  # "AND" or "OR"
    filters: tuple[Condition | Junction, ...]


@dataclass(frozen=True)
class Query:
    collection: str  # the collection id (last path segment), as indexes name it
    collection_group: bool = False
    where: Condition | Junction | None = None
    orders: tuple[tuple[str, str], ...] = ()  # (field path, ASCENDING|DESCENDING)

    @property
    def scope(self) -> str:
        return COLLECTION_GROUP if self.collection_group else COLLECTION


@dataclass(frozen=True)
class CompositeIndex:
    collection: str
    fields: tuple[tuple[str, str], ...]  # (field path, ASCENDING|DESCENDING|CONTAINS)
    query_scope: str = COLLECTION


@dataclass(frozen=True)
class FieldOverride:
    """A single-field exemption: these (scope, mode) indexes replace the automatic ones."""

    collection: str
    field: str
    indexes: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Indexes:
    composites: tuple[CompositeIndex, ...] = ()
    overrides: tuple[FieldOverride, ...] = ()

    def single_field(self, collection: str, path: str, scope: str, mode: str) -> bool:
        if path == NAME:
            return True
        for override in self.overrides:
            if override.collection == collection and override.field == path:
                return (scope, mode) in override.indexes
        return scope == COLLECTION


@dataclass(frozen=True)
class Need:
    """What one disjunction of a query needs, as Firestore's error would name it."""

    collection: str
    scope: str
    fields: tuple[tuple[str, str], ...]
    single_field: bool = False

    def describe(self) -> str:
        kind = "single-field index exemption" if self.single_field else "composite index"
        listed = ", ".join(f"{path} {mode}" for path, mode in self.fields)
        return f"a {kind} on collection {self.collection!r} ({self.scope}): {listed}"


@dataclass
class _Branch:
    equalities: dict[str, str] = field(default_factory=dict)  # path -> ASCENDING (any order) or CONTAINS
    inequalities: set[str] = field(default_factory=set)


def _disjunctions(where: Condition | Junction | None) -> list[list[Condition]]:
    """The filter in disjunctive normal form: a list of AND-ed condition lists."""
    if where is None:
        return [[]]
    if isinstance(where, Condition):
        return [[where]]
    parts = [_disjunctions(f) for f in where.filters]
    if where.op == "OR":
        return [branch for part in parts for branch in part]
    product: list[list[Condition]] = [[]]
    for part in parts:
        product = [left + right for left in product for right in part]
    return product


def _reverse(mode: str) -> str:
    return {ASCENDING: DESCENDING, DESCENDING: ASCENDING}.get(mode, mode)


def _branch_need(query: Query, conditions: list[Condition], indexes: Indexes) -> Need | None:
    branch = _Branch()
    for condition in conditions:
        if condition.field == NAME:
            continue  # every index ends in __name__
        if condition.op in EQUALITY:
            branch.equalities[condition.field] = ASCENDING
        elif condition.op in ARRAY_EQUALITY:
            branch.equalities[condition.field] = CONTAINS
        else:
            branch.inequalities.add(condition.field)
    # The effective order: explicit orders (a constant field orders nothing), then the
    # inequality fields not ordered explicitly, lexicographically; __name__ is implied last.
    orders: list[tuple[str, str]] = []
    for path, direction in query.orders:
        if path == NAME:
            break
        if branch.equalities.get(path) != ASCENDING and path not in [p for p, _ in orders]:
            orders.append((path, direction))
    ordered = {p for p, _ in orders}
    orders += [(path, ASCENDING) for path in sorted(branch.inequalities - ordered)]

    scope = query.scope
    if not orders:
        for path, mode in sorted(branch.equalities.items()):
            if not (
                indexes.single_field(query.collection, path, scope, mode)
                or (mode == ASCENDING and indexes.single_field(query.collection, path, scope, DESCENDING))
            ):
                return Need(query.collection, scope, ((path, mode),), single_field=True)
        return None
    if len(orders) == 1 and not branch.equalities:
        path, direction = orders[0]
        if indexes.single_field(query.collection, path, scope, direction) or indexes.single_field(
            query.collection, path, scope, _reverse(direction)
        ):
            return None
        return Need(query.collection, scope, ((path, direction),), single_field=True)
    if _composites_serve(query.collection, scope, branch.equalities, orders, indexes):
        return None
    return Need(query.collection, scope, (*sorted(branch.equalities.items()), *orders))


def _composites_serve(
    collection: str, scope: str, equalities: dict[str, str], orders: list[tuple[str, str]], indexes: Indexes
) -> bool:
    wanted = set(equalities.items())
    for suffix in (orders, [(p, _reverse(d)) for p, d in orders]):
        covered: set[tuple[str, str]] = set()
        for index in indexes.composites:
            if index.collection != collection or index.query_scope != scope:
                continue
            fields = list(index.fields)
            if fields and fields[-1][0] == NAME:
                fields = fields[:-1]
            if len(fields) < len(suffix) or fields[len(fields) - len(suffix) :] != suffix:
                continue
            prefix = {(p, ASCENDING if m == DESCENDING else m) for p, m in fields[: len(fields) - len(suffix)]}
            if prefix <= wanted:
                covered |= prefix
                if covered == wanted:
                    return True
    return False


def missing_index(query: Query, indexes: Indexes) -> Need | None:
    """The first index the query needs and `indexes` lacks; None when production serves it."""
    for conditions in _disjunctions(query.where):
        need = _branch_need(query, conditions, indexes)
        if need is not None:
            return need
    return None


# --- reading terraform/*.tf ----------------------------------------------------------------


def plain_hcl(value: Any) -> Any:
    """python-hcl2 keeps quotes and ${...}; strip both (tests/infra reads Terraform with this too)."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        match = re.fullmatch(r"\$\{(.*)\}", value, flags=re.DOTALL)
        return match.group(1) if match else value
    if isinstance(value, list):
        return [plain_hcl(v) for v in value]
    if isinstance(value, dict):
        return {
            plain_hcl(k): plain_hcl(v) for k, v in value.items() if k not in ("__is_block__", "__inline_comments__")
        }
    return value


def _for_each_values(body: dict, local_values: dict[str, Any]) -> list[str | None]:
    """The `each.value`s of a resource (None once when it has no for_each)."""
    expression = body.get("for_each")
    if expression is None:
        return [None]
    if isinstance(expression, str):
        match = re.fullmatch(r"local\.(\w+)", expression.strip())
        if match:
            expression = local_values.get(match.group(1), "")
    if isinstance(expression, list | dict):
        return [str(v) for v in expression]
    names = re.findall(r'"([^"]*)"', str(expression))
    if not names:
        raise ValueError(f"cannot evaluate the for_each {body.get('for_each')!r} of a Firestore resource")
    return names


def _resolve(text: str, each: str | None) -> str:
    return each if each is not None and text in ("each.value", "each.key") else text


def _mode(block: dict) -> str:
    if block.get("array_config"):
        return CONTAINS
    return str(block.get("order", ASCENDING))


def load_terraform(directory: Path) -> Indexes:
    import hcl2

    composites: list[CompositeIndex] = []
    overrides: list[FieldOverride] = []
    documents = []
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            documents.append(plain_hcl(hcl2.load(handle)))
    local_values: dict[str, Any] = {}
    for document in documents:
        for block in document.get("locals", []):
            local_values.update(block)
    for document in documents:
        for block in document.get("resource", []):
            for rtype, named in block.items():
                if rtype not in ("google_firestore_index", "google_firestore_field"):
                    continue
                for body in named.values():
                    for each in _for_each_values(body, local_values):
                        collection = _resolve(str(body["collection"]), each)
                        if rtype == "google_firestore_index":
                            fields = tuple(
                                (_resolve(str(f["field_path"]), each), _mode(f)) for f in body.get("fields", [])
                            )
                            scope = str(body.get("query_scope", COLLECTION))
                            composites.append(CompositeIndex(collection, fields, scope))
                        elif "index_config" in body:  # without it, the field keeps the automatic indexes
                            configs = body["index_config"] or [{}]
                            entries = frozenset(
                                (str(i.get("query_scope", COLLECTION)), _mode(i)) for i in configs[0].get("indexes", [])
                            )
                            overrides.append(FieldOverride(collection, _resolve(str(body["field"]), each), entries))
    return Indexes(tuple(composites), tuple(overrides))


# --- from the wire -------------------------------------------------------------------------------


def from_structured_query(structured_query: Any) -> Query:
    """A google.cloud.firestore_v1.types.StructuredQuery as plain data."""
    selector = structured_query.from_[0]

    def convert(message: Any) -> Condition | Junction | None:
        kind = type(message).pb(message).WhichOneof("filter_type")
        if kind == "composite_filter":
            composite = message.composite_filter
            parts = tuple(c for c in (convert(f) for f in composite.filters) if c is not None)
            return Junction(composite.op.name, parts)
        if kind == "field_filter":
            return Condition(message.field_filter.field.field_path, message.field_filter.op.name)
        if kind == "unary_filter":
            return Condition(message.unary_filter.field.field_path, message.unary_filter.op.name)
        return None

    where = convert(structured_query.where) if "where" in structured_query else None
    orders = tuple((o.field.field_path, o.direction.name) for o in structured_query.order_by)
    return Query(selector.collection_id, bool(selector.all_descendants), where, orders)


def describe_query(query: Query) -> str:
    def text(node: Condition | Junction | None) -> str:
        if node is None:
            return ""
        if isinstance(node, Condition):
            return f"{node.field} {node.op}"
        return "(" + f" {node.op} ".join(text(f) for f in node.filters) + ")"

    where = text(query.where)
    order = ", ".join(f"{p} {d}" for p, d in query.orders)
    scope = "collection group" if query.collection_group else "collection"
    text_where = f" where {where}" if where else ""
    return f"{scope} {query.collection}{text_where}" + (f" order by {order}" if order else "")


def needs_of(queries: Iterable[Query], indexes: Indexes) -> list[Need]:
    """Every distinct index the queries need and `indexes` lacks."""
    found: list[Need] = []
    for query in queries:
        need = missing_index(query, indexes)
        if need is not None and need not in found:
            found.append(need)
    return found

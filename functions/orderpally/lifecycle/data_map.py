"""The data map, loaded and checked once: where customer data lives and its retention class."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import pydantic
import yaml

DATA_MAP_FILE = Path(__file__).with_name("data_map.yaml")


class RetentionClass(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    action: Literal["delete", "retain_pseudonymised"]
    years: int | None = pydantic.Field(default=None, ge=1, le=30)
    legal_basis: str | None = None
    # Accounting records count from the annual closing of their fiscal year; others from their own day.
    from_annual_closing: bool = False

    @pydantic.model_validator(mode="after")
    def _retained_needs_basis(self) -> RetentionClass:
        if self.action == "retain_pseudonymised" and (self.years is None or not self.legal_basis):
            raise ValueError("a retained class needs years and a legal basis")
        return self


class Child(pydantic.BaseModel):
    """A sub-collection (or a document) that belongs to each record of a location: pseudonymised
    with the record and purged with it, since Firestore deletes no sub-collection with its parent.

    Placeholders: {document} (the record's path) and {id} (the record's id)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    collection: str
    # A hash-chained collection (orderpally.audit): its pending entries are linked before it is
    # pseudonymised, it is re-sealed after, and its head and pending list go with the record.
    chain_head: str | None = None
    personal_fields: list[str] = pydantic.Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _placeholders(self) -> Child:
        for template in filter(None, (self.collection, self.chain_head)):
            if "{document}" not in template and "{id}" not in template:
                raise ValueError(f"{template}: a child's path must contain {{document}} or {{id}}")
        return self

    def resolve(self, template: str, document_path: str) -> str:
        return template.replace("{document}", document_path).replace("{id}", document_path.rsplit("/", 1)[-1])

    def collection_ids(self) -> set[str]:
        names: set[str] = set()
        for template in filter(None, (self.collection, self.chain_head)):
            parts = template.split("/")
            parts = parts[1:] if parts[0] == "{document}" else parts
            names |= {part for part in parts[0::2] if "{" not in part}
        return names


class Location(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    id: str = pydantic.Field(pattern=r"^[a-z_]+$")
    kind: Literal["document", "collection", "owned", "storage"]
    retention: str
    path: str | None = None
    collection: str | None = None
    owner_field: str | None = None
    shared_with: str | None = None
    personal_fields: list[str] = pydantic.Field(default_factory=list)
    # The field that dates a retained record (its fiscal year, or its own day).
    dated_by: str | None = None
    # Fields that are secrets of the service's, not the customer's content: left out of exports.
    not_exported: list[str] = pydantic.Field(default_factory=list)
    bucket: Literal["exports", "attachments"] | None = None
    prefix: str | None = None
    # owned: `collection` names a collection group (a sub-collection under any parent).
    group: bool = False
    # owned: records whose owner field is empty (a report made without an account) are nobody's
    # to delete; under the same class, the purge ends them `years` after their `dated_by` day.
    ownerless: bool = False
    children: list[Child] = pydantic.Field(default_factory=list)
    # A field naming Storage objects of the record in `bucket` ("attachments[].object"): purged with it.
    objects: str | None = None
    # Left by the deletion job while another job still needs the record as it is; the retention
    # purge pseudonymises it once this field is true (and drops the field).
    deferred_until: str | None = None
    # The record proves a mail was sent (a breach notice): before it is pseudonymised, the delivery's
    # status and time are copied onto it, since the delivery ledger goes with the account.
    proof_of_mail: bool = False

    @property
    def owner(self) -> str:
        """The field naming an `owned` record's account (the validator requires it)."""
        if not self.owner_field:
            raise ValueError(f"{self.id}: not an owned location")
        return self.owner_field

    @property
    def date_field(self) -> str:
        """The field that dates a retained record."""
        if not self.dated_by:
            raise ValueError(f"{self.id}: has no dated_by")
        return self.dated_by

    @pydantic.model_validator(mode="after")
    def _complete(self) -> Location:
        needed = {
            "document": ("path",),
            "collection": ("path",),
            "owned": ("collection", "owner_field"),
            "storage": ("bucket", "prefix"),
        }[self.kind]
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ValueError(f"{self.id}: {self.kind} needs {', '.join(missing)}")
        if self.kind in ("document", "collection", "storage"):
            template = self.path or self.prefix or ""
            if "{account_id}" not in template:
                raise ValueError(f"{self.id}: the path must contain {{account_id}}")
        if self.objects and not self.bucket:
            raise ValueError(f"{self.id}: objects need a bucket")
        if self.ownerless and not (self.kind == "owned" and self.dated_by):
            raise ValueError(f"{self.id}: ownerless records are owned-kind records with dated_by")
        return self

    def resolve(self, account_id: str) -> str:
        """The concrete path or prefix for one account."""
        return (self.path or self.prefix or "").replace("{account_id}", account_id)


class DataMap(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    retention_classes: dict[str, RetentionClass]
    locations: list[Location]
    not_customer_data: dict[str, str]

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> DataMap:
        ids = [loc.id for loc in self.locations]
        if len(ids) != len(set(ids)):
            raise ValueError("location ids must be unique")
        for loc in self.locations:
            if loc.retention not in self.retention_classes:
                raise ValueError(f"{loc.id}: unknown retention class {loc.retention}")
            retained = self.retention_classes[loc.retention].action == "retain_pseudonymised"
            if retained and loc.kind != "owned":
                raise ValueError(f"{loc.id}: only owned documents (with an owner field) can be pseudonymised")
            # Nobody's account deletes an ownerless record: only a retention date can end it.
            if loc.ownerless and not retained:
                raise ValueError(f"{loc.id}: ownerless records need a retained class, whose purge ends them")
        return self

    def retention_of(self, location: Location) -> RetentionClass:
        return self.retention_classes[location.retention]

    def collection_ids(self) -> set[str]:
        """Every Firestore collection id this map accounts for, customer data or not."""
        names = {loc.collection for loc in self.locations if loc.collection}
        for loc in self.locations:
            if loc.kind in ("document", "collection") and loc.path:
                names |= set(loc.path.split("/")[0::2])
            for child in loc.children:
                names |= child.collection_ids()
        return names | set(self.not_customer_data)

    def collection_patterns(self) -> set[str]:
        """Every collection path this map classifies, document ids as `*` ("incidents/*/history");
        `**/` before a collection group. A not_customer_data entry whose reason starts with a
        path and a colon ("notices/{id}/versions: ...") is that sub-collection."""

        def pattern(template: str) -> str:
            return "/".join("*" if "{" in part else part for part in template.split("/"))

        found: set[str] = set()
        for loc in self.locations:
            if loc.kind in ("document", "collection") and loc.path:
                parts = pattern(loc.path).split("/")
                found |= {"/".join(parts[: i + 1]) for i in range(0, len(parts), 2)}
            elif loc.collection:
                found.add(f"**/{loc.collection}" if loc.group else loc.collection)
            parent = pattern(loc.collection or "") + "/*"
            for child in loc.children:
                for template in filter(None, (child.collection, child.chain_head)):
                    parts = pattern(template.replace("{document}", parent)).split("/")
                    found |= {"/".join(parts[: i + 1]) for i in range(0, len(parts), 2)}
        for name, reason in self.not_customer_data.items():
            head = reason.split(":", 1)[0]
            found.add(pattern(head) if "/" in head and head.endswith("/" + name) else name)
        return found

    def classifies(self, collection_path: str) -> bool:
        """Whether a concrete collection path ("incidents/OPI-1/history") is in this map."""
        parts = collection_path.split("/")
        concrete = "/".join("*" if i % 2 else part for i, part in enumerate(parts))
        patterns = self.collection_patterns()
        return concrete in patterns or f"**/{parts[-1]}" in patterns

    def owned_by_collection(self) -> dict[str, list[Location]]:
        """Owned locations grouped by their collection (id), in data-map order."""
        grouped: dict[str, list[Location]] = {}
        for loc in self.locations:
            if loc.kind == "owned" and loc.collection:
                grouped.setdefault(loc.collection, []).append(loc)
        return grouped


def parse(text: str) -> DataMap:
    return DataMap.model_validate(yaml.safe_load(text))


@functools.cache
def load() -> DataMap:
    return parse(DATA_MAP_FILE.read_text(encoding="utf-8"))

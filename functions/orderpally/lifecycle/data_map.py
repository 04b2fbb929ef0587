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
            if self.retention_classes[loc.retention].action == "retain_pseudonymised" and loc.kind != "owned":
                raise ValueError(f"{loc.id}: only owned documents (with an owner field) can be pseudonymised")
        return self

    def retention_of(self, location: Location) -> RetentionClass:
        return self.retention_classes[location.retention]

    def collection_ids(self) -> set[str]:
        """Every Firestore collection id this map accounts for, customer data or not."""
        names = {loc.collection for loc in self.locations if loc.collection}
        for loc in self.locations:
            if loc.kind in ("document", "collection") and loc.path:
                names |= set(loc.path.split("/")[0::2])
        return names | set(self.not_customer_data)


def parse(text: str) -> DataMap:
    return DataMap.model_validate(yaml.safe_load(text))


@functools.cache
def load() -> DataMap:
    return parse(DATA_MAP_FILE.read_text(encoding="utf-8"))

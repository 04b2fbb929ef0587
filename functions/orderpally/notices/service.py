"""Service-change and SLA notices: published versions that are never edited in place.

Firestore layout:
    notices/{id}                  kind, audience, SLA link, the current version's summary,
                                  first_published_at (what the public listing orders by)
    notices/{id}/versions/{n}     every version as published: text in both languages,
                                  effective date, exemption, author; created once, never updated
    slas/{sla_id}                 the SLA's state (active | suspended) and its notices
    notice_fanouts/{id}-v{n}      one mailing per version, written in the same transaction
                                  as the version, so a published version is never left unmailed
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import pydantic

from orderpally import fields, web
from orderpally.notices import rules, store

if TYPE_CHECKING:
    from google.cloud.firestore import Client, Transaction

Kind = Literal["service_change", "sla"]
KINDS = get_args(Kind)
_LABEL = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Label = Annotated[str, pydantic.StringConstraints(pattern=_LABEL)]  # a plan, feature or SLA name


class LocalizedText(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    title: str = pydantic.Field(min_length=1, max_length=200)
    body: str = pydantic.Field(min_length=1, max_length=20000)


class Texts(pydantic.BaseModel):
    """Every notice is written in both languages the agreement is offered in."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    zh_tw: LocalizedText = pydantic.Field(alias="zh-TW")
    en: LocalizedText


class Audience(pydantic.BaseModel):
    """Everyone, or the customers on one of `plans` or using one of `features`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    all: bool = False
    plans: list[Label] = pydantic.Field(default_factory=list, max_length=50)
    features: list[Label] = pydantic.Field(default_factory=list, max_length=50)

    @pydantic.model_validator(mode="after")
    def _someone(self) -> Audience:
        if self.all == bool(self.plans or self.features):
            raise ValueError("set either all, or plans and/or features")
        return self

    def includes(self, account: dict[str, Any]) -> bool:
        if self.all:
            return True
        return account.get("plan") in self.plans or bool(set(account.get("features") or ()) & set(self.features))


class ExemptionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    kind: rules.Exemption
    justification: str = pydantic.Field(max_length=2000)


class SlaChange(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    sla_id: Label
    action: Literal["add", "change", "suspend"]


class NoticeDraft(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    kind: Kind
    text: Texts
    affects: Audience
    publish_at: fields.Moment | None = None  # now when omitted
    effective_date: fields.IsoDate
    exemption: ExemptionBody | None = None
    sla: SlaChange | None = None

    @pydantic.model_validator(mode="after")
    def _sla_iff_kind(self) -> NoticeDraft:
        if (self.kind == "sla") != (self.sla is not None):
            raise ValueError("an sla notice names the SLA and the action; other notices do not")
        return self


class CorrectionDraft(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    text: Texts
    effective_date: fields.IsoDate
    correction_note: str = pydantic.Field(min_length=5, max_length=2000)
    exemption: ExemptionBody | None = None


def _not_possible(slug: str, detail: str) -> web.Problem:
    return web.Problem(409, slug, "Not possible", detail)


def _not_found(slug: str, detail: str) -> web.Problem:
    return web.Problem(404, slug, "Not found", detail)


def _exemption(body: ExemptionBody | None) -> tuple[rules.Exemption | None, str | None]:
    return (body.kind, body.justification) if body else (None, None)


def _version_record(
    number: int, draft: NoticeDraft | CorrectionDraft, published_at: datetime, author: str, now: datetime
) -> dict[str, Any]:
    return {
        "version": number,
        "text": draft.text.model_dump(by_alias=True),
        "effective_date": draft.effective_date.isoformat(),
        "published_at": published_at,
        "exemption": draft.exemption.model_dump(mode="json") if draft.exemption else None,
        "correction_note": getattr(draft, "correction_note", None),
        "author": author,
        "created_at": now,
    }


def _fanout_record(notice_id: str, number: int, due_at: datetime) -> dict[str, Any]:
    return {"notice_id": notice_id, "version": number, "status": "pending", "due_at": due_at, "cursor": None}


def fanout_id(notice_id: str, version: int) -> str:
    return f"{notice_id}-v{version}"


def _check_sla(transaction: Transaction, db: Client, change: SlaChange) -> dict[str, Any]:
    state = store.sla_in(transaction, db, change.sla_id)
    if change.action == "add" and state is not None:
        raise _not_possible("sla-exists", f"SLA {change.sla_id} exists already; announce a change instead.")
    if change.action != "add" and state is None:
        raise _not_found("sla-not-found", f"There is no SLA {change.sla_id} to {change.action}.")
    if change.action != "add" and state and state.get("status") == "suspended":
        raise _not_possible("sla-suspended", f"SLA {change.sla_id} is suspended; add it again to restore it.")
    return state or {}


def create_notice(db: Client, draft: NoticeDraft, author: str, now: datetime) -> dict[str, Any]:
    """Publishes version 1 (at `publish_at`) after the one-month rule; returns the notice.
    Refused (web.Problem) when the rule is not met or the SLA change does not fit its state."""
    published_at = rules.publication_time(draft.publish_at, now)
    rules.check_timing(rules.Timing(published_at, draft.effective_date), *_exemption(draft.exemption))
    notice_id = f"{rules.taipei_date(published_at):%Y%m%d}-{secrets.token_hex(5)}"
    notice = {
        "kind": draft.kind,
        "affects": draft.affects.model_dump(),
        "sla": draft.sla.model_dump() if draft.sla else None,
        "first_published_at": published_at,
        "current_version": 1,
        "effective_date": draft.effective_date.isoformat(),
        "created_by": author,
        "updated_at": now,
    }

    def publish(transaction: Transaction) -> None:
        if draft.sla:
            _check_sla(transaction, db, draft.sla)
            status = "suspended" if draft.sla.action == "suspend" else "active"
            store.set_sla(transaction, db, draft.sla.sla_id, status, notice_id, now)
        store.create_notice(transaction, db, notice_id, notice)
        store.create_version(transaction, db, notice_id, 1, _version_record(1, draft, published_at, author, now))
        store.create_fanout(transaction, db, fanout_id(notice_id, 1), _fanout_record(notice_id, 1, published_at))

    store.in_transaction(db, publish)
    return {"id": notice_id, **notice}


def correct_notice(db: Client, notice_id: str, draft: CorrectionDraft, author: str, now: datetime) -> dict[str, Any]:
    """Publishes the next version; the earlier ones stay visible as they were. Refused
    (web.Problem) when there is no such notice or the correction does not meet the rule."""

    def correct(transaction: Transaction) -> dict[str, Any]:
        notice = store.notice_in(transaction, db, notice_id)
        if notice is None:
            raise _not_found("notice-not-found", "No such notice.")
        # A correction to a notice not yet out goes out with it, not before.
        published_at = max(now, notice["first_published_at"])
        rules.check_correction(rules.Timing(published_at, draft.effective_date), *_exemption(draft.exemption))
        number = int(notice["current_version"]) + 1
        update = {"current_version": number, "effective_date": draft.effective_date.isoformat(), "updated_at": now}
        store.update_notice(transaction, db, notice_id, update)
        version = _version_record(number, draft, published_at, author, now)
        store.create_version(transaction, db, notice_id, number, version)
        store.create_fanout(
            transaction, db, fanout_id(notice_id, number), _fanout_record(notice_id, number, published_at)
        )
        return {"id": notice_id, **notice, **update}

    return store.in_transaction(db, correct)


def visible_versions(db: Client, notice_id: str, now: datetime) -> list[dict[str, Any]]:
    """The notice's versions the public may see, oldest first."""
    visible = [v for v in store.versions(db, notice_id) if v["published_at"] <= now]
    return sorted(visible, key=lambda v: v["version"])


def published_notices(
    db: Client, now: datetime, *, kind: str | None, limit: int, before: tuple[datetime, str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """Published notices, newest first, starting after the `before` cursor (published time, id)."""
    return store.published(db, now, kind=kind, limit=limit, before=before)


def affecting(
    db: Client, account: dict[str, Any], now: datetime, *, limit: int = 20, scan: int = 200
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, notice, current version) of the newest published notices whose audience includes
    `account` (its plan and features), up to `limit`, among the newest `scan` published."""
    found = []
    for notice_id, notice in store.published(db, now, kind=None, limit=scan, before=None):
        if Audience.model_validate(notice["affects"]).includes(account):
            versions = visible_versions(db, notice_id, now)
            if versions:
                found.append((notice_id, notice, versions[-1]))
            if len(found) == limit:
                break
    return found


def sla_history(db: Client, sla_id: str, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    state = store.sla(db, sla_id) or {}
    notices = []
    for notice_id in state.get("notices", []):
        notice = store.notice(db, notice_id)
        if notice and notice["first_published_at"] <= now:
            notices.append((notice_id, notice))
    return sorted(notices, key=lambda item: item[1]["first_published_at"])


def load(db: Client, notice_id: str) -> dict[str, Any] | None:
    """The notice document (published or not: callers check `first_published_at`)."""
    return store.notice(db, notice_id)


def notice_and_version(db: Client, notice_id: str, number: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The notice and one of its versions, None when either is missing."""
    notice = store.notice(db, notice_id)
    version = store.version(db, notice_id, number)
    return None if notice is None or version is None else (notice, version)

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
from typing import Any, Literal

import pydantic

from orderpally import fields
from orderpally.notices import rules

NOTICES = "notices"
VERSIONS = "versions"
SLAS = "slas"
FANOUTS = "notice_fanouts"
KINDS = ("service_change", "sla")
_LABEL = r"^[a-z0-9][a-z0-9_-]{0,63}$"


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
    plans: list[pydantic.constr(pattern=_LABEL)] = pydantic.Field(default_factory=list, max_length=50)  # type: ignore[valid-type]
    features: list[pydantic.constr(pattern=_LABEL)] = pydantic.Field(default_factory=list, max_length=50)  # type: ignore[valid-type]

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

    sla_id: str = pydantic.Field(pattern=_LABEL)
    action: Literal["add", "change", "suspend"]


class NoticeDraft(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    kind: Literal["service_change", "sla"]
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


class NoticeConflict(Exception):
    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug


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


def version_ref(notice_ref: Any, number: int) -> Any:
    return notice_ref.collection(VERSIONS).document(str(number))


def fanout_id(notice_id: str, version: int) -> str:
    return f"{notice_id}-v{version}"


def _check_sla(transaction: Any, db: Any, change: SlaChange) -> dict[str, Any]:
    snapshot = db.collection(SLAS).document(change.sla_id).get(transaction=transaction)
    state = snapshot.to_dict() if snapshot.exists else None
    if change.action == "add" and state is not None:
        raise NoticeConflict(409, "sla-exists", f"SLA {change.sla_id} exists already; announce a change instead.")
    if change.action != "add" and state is None:
        raise NoticeConflict(404, "sla-not-found", f"There is no SLA {change.sla_id} to {change.action}.")
    if change.action != "add" and state and state.get("status") == "suspended":
        raise NoticeConflict(409, "sla-suspended", f"SLA {change.sla_id} is suspended; add it again to restore it.")
    return state or {}


def create_notice(db: Any, draft: NoticeDraft, author: str, now: datetime) -> dict[str, Any]:
    """Publishes version 1 (at `publish_at`) after the one-month rule; returns the notice."""
    from google.cloud import firestore

    published_at = rules.publication_time(draft.publish_at, now)
    rules.check_timing(rules.Timing(published_at, draft.effective_date), *_exemption(draft.exemption))
    notice_id = f"{rules.taipei_date(published_at):%Y%m%d}-{secrets.token_hex(5)}"
    ref = db.collection(NOTICES).document(notice_id)
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

    @firestore.transactional
    def publish(transaction: Any) -> None:
        if draft.sla:
            _check_sla(transaction, db, draft.sla)
            transaction.set(
                db.collection(SLAS).document(draft.sla.sla_id),
                {
                    "status": "suspended" if draft.sla.action == "suspend" else "active",
                    "notices": firestore.ArrayUnion([notice_id]),
                    "updated_at": now,
                },
                merge=True,
            )
        transaction.create(ref, notice)
        transaction.create(version_ref(ref, 1), _version_record(1, draft, published_at, author, now))
        transaction.create(
            db.collection(FANOUTS).document(fanout_id(notice_id, 1)), _fanout_record(notice_id, 1, published_at)
        )

    publish(db.transaction())
    return {"id": notice_id, **notice}


def correct_notice(db: Any, notice_id: str, draft: CorrectionDraft, author: str, now: datetime) -> dict[str, Any]:
    """Publishes the next version; the earlier ones stay visible as they were."""
    from google.cloud import firestore

    ref = db.collection(NOTICES).document(notice_id)

    @firestore.transactional
    def correct(transaction: Any) -> dict[str, Any]:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists:
            raise NoticeConflict(404, "notice-not-found", "No such notice.")
        notice = snapshot.to_dict()
        # A correction to a notice not yet out goes out with it, not before.
        published_at = max(now, notice["first_published_at"])
        rules.check_correction(rules.Timing(published_at, draft.effective_date), *_exemption(draft.exemption))
        number = int(notice["current_version"]) + 1
        update = {"current_version": number, "effective_date": draft.effective_date.isoformat(), "updated_at": now}
        transaction.update(ref, update)
        version = _version_record(number, draft, published_at, author, now)
        transaction.create(version_ref(ref, number), version)
        transaction.create(
            db.collection(FANOUTS).document(fanout_id(notice_id, number)),
            _fanout_record(notice_id, number, published_at),
        )
        return {"id": notice_id, **notice, **update}

    return correct(db.transaction())


def visible_versions(db: Any, notice_id: str, now: datetime) -> list[dict[str, Any]]:
    """The notice's versions the public may see, oldest first."""
    versions = db.collection(NOTICES).document(notice_id).collection(VERSIONS).get()
    visible = [v.to_dict() for v in versions if v.to_dict()["published_at"] <= now]
    return sorted(visible, key=lambda v: v["version"])


def published_notices(
    db: Any, now: datetime, *, kind: str | None, limit: int, before: tuple[datetime, str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """Published notices, newest first, starting after the `before` cursor (published time, id)."""
    from google.cloud import firestore

    query = db.collection(NOTICES).where(filter=firestore.FieldFilter("first_published_at", "<=", now))
    if kind:
        query = query.where(filter=firestore.FieldFilter("kind", "==", kind))
    query = query.order_by("first_published_at", direction=firestore.Query.DESCENDING).order_by(
        "__name__", direction=firestore.Query.DESCENDING
    )
    if before:
        query = query.start_after(
            {"first_published_at": before[0], "__name__": db.collection(NOTICES).document(before[1])}
        )
    return [(snap.id, snap.to_dict()) for snap in query.limit(limit).get()]


def sla_history(db: Any, sla_id: str, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    state = db.collection(SLAS).document(sla_id).get().to_dict() or {}
    notices = []
    for notice_id in state.get("notices", []):
        notice = db.collection(NOTICES).document(notice_id).get().to_dict()
        if notice and notice["first_published_at"] <= now:
            notices.append((notice_id, notice))
    return sorted(notices, key=lambda item: item[1]["first_published_at"])


def load(db: Any, notice_id: str) -> dict[str, Any] | None:
    """The notice document (published or not: callers check `first_published_at`)."""
    return db.collection(NOTICES).document(notice_id).get().to_dict()

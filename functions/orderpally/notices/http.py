"""HTTP routes of notices: the public listing (JSON, Atom, HTML) and staff publishing."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import flask
import pydantic

from orderpally import clients, events, fields, web
from orderpally.access import guard as access
from orderpally.accounts import LANGUAGES
from orderpally.config import settings
from orderpally.notices import fanout, rules, service

if TYPE_CHECKING:
    import jinja2

NOTICE_ID = re.compile(r"^[0-9]{8}-[0-9a-f]{10}$")
SLA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class ListQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    kind: service.Kind | None = None
    page_size: int = pydantic.Field(default=20, ge=1, le=100)
    page_token: str | None = pydantic.Field(default=None, max_length=200)
    lang: Literal["zh-TW", "en"] | None = None
    id: str | None = pydantic.Field(default=None, pattern=NOTICE_ID.pattern)


@functools.cache
def _templates() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "atom")),
        undefined=jinja2.StrictUndefined,
    )
    # Dates on the page are the customer's calendar date, as the one-month rule counts them.
    env.filters["taipei_date"] = lambda iso: rules.taipei_date(datetime.fromisoformat(iso)).isoformat()
    return env


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _public_version(version: dict[str, Any]) -> dict[str, Any]:
    keys = ("version", "text", "effective_date", "published_at", "exemption", "correction_note")
    return {key: _iso(version.get(key)) for key in keys}


def _public_notice(db: Any, notice_id: str, notice: dict[str, Any], now: datetime) -> dict[str, Any]:
    versions = [_public_version(v) for v in service.visible_versions(db, notice_id, now)]
    current = versions[-1]
    return {
        "id": notice_id,
        "kind": notice["kind"],
        "affects": notice["affects"],
        "sla": notice.get("sla"),
        "first_published_at": _iso(notice["first_published_at"]),
        "current_version": current["version"],
        "effective_date": current["effective_date"],
        "versions": versions,
    }


def _encode_token(notice_id: str, notice: dict[str, Any]) -> str:
    return web.encode_page_token({"t": notice["first_published_at"].isoformat(), "id": notice_id})


def _decode_token(token: str) -> tuple[datetime, str]:
    position = web.decode_page_token(token)
    try:
        moment, notice_id = fields.in_utc_range(datetime.fromisoformat(position["t"])), str(position["id"])
    except (ValueError, KeyError, TypeError):
        raise web.invalid_page_token() from None
    if moment.tzinfo is None or not NOTICE_ID.fullmatch(notice_id):
        raise web.invalid_page_token()
    return moment, notice_id


def _query(request: flask.Request) -> ListQuery:
    return web.validate(request.args.to_dict(), ListQuery)


def _listing(request: flask.Request, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
    db = clients.firestore_client()
    now = datetime.now(UTC)
    if query.id:
        notice = service.load(db, query.id)
        if not notice or notice["first_published_at"] > now:
            raise web.Problem(404, "notice-not-found", "Not found", "No such notice.")
        return [_public_notice(db, query.id, notice, now)], None
    before = _decode_token(query.page_token) if query.page_token else None
    page = service.published_notices(db, now, kind=query.kind, limit=query.page_size + 1, before=before)
    more = len(page) > query.page_size
    page = page[: query.page_size]
    token = _encode_token(*page[-1]) if more else None
    return [_public_notice(db, notice_id, notice, now) for notice_id, notice in page], token


def _language(request: flask.Request, query: ListQuery) -> str:
    return query.lang or request.accept_languages.best_match(LANGUAGES, default="zh-TW") or "zh-TW"


def list_notices(request: flask.Request) -> flask.Response:
    notices, token = _listing(request, _query(request))
    response = web.json_response({"notices": notices, "next_page_token": token})
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


def get_notice(request: flask.Request, notice_id: str) -> flask.Response:
    if not NOTICE_ID.fullmatch(notice_id):
        raise web.Problem(404, "notice-not-found", "Not found", "No such notice.")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    notice = service.load(db, notice_id)
    if not notice or notice["first_published_at"] > now:
        raise web.Problem(404, "notice-not-found", "Not found", "No such notice.")
    return web.json_response(_public_notice(db, notice_id, notice, now))


def get_sla(request: flask.Request, sla_id: str) -> flask.Response:
    if not SLA_ID.fullmatch(sla_id):
        raise web.Problem(404, "sla-not-found", "Not found", "No such SLA.")
    db = clients.firestore_client()
    now = datetime.now(UTC)
    history = service.sla_history(db, sla_id, now)
    if not history:
        raise web.Problem(404, "sla-not-found", "Not found", "No such SLA.")
    notices = [_public_notice(db, notice_id, notice, now) for notice_id, notice in history]
    status = "suspended" if notices[-1]["sla"]["action"] == "suspend" else "active"
    return web.json_response({"sla_id": sla_id, "status": status, "notices": notices})


def _rendered(body: str, mimetype: str) -> flask.Response:
    response = flask.Response(body, mimetype=mimetype)
    response.headers["Cache-Control"] = "public, max-age=60"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Vary"] = "Accept-Language"
    return response


def notices_page(request: flask.Request) -> flask.Response:
    query = _query(request)
    notices, token = _listing(request, query)
    lang = _language(request, query)
    html = (
        _templates()
        .get_template("page.html")
        .render(notices=notices, lang=lang, kind=query.kind, next_page_token=token, base=settings().public_base_url)
    )
    response = _rendered(html, "text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Content-Language"] = lang
    return response


def notices_feed(request: flask.Request) -> flask.Response:
    query = _query(request)
    notices, _ = _listing(request, query.model_copy(update={"page_size": 50, "page_token": None}))
    lang = _language(request, query)
    updated = max((n["versions"][-1]["published_at"] for n in notices), default="1970-01-01T00:00:00+00:00")
    atom = (
        _templates()
        .get_template("feed.atom")
        .render(notices=notices, lang=lang, updated=updated, base=settings().public_base_url)
    )
    return _rendered(atom, "application/atom+xml")


def release_now(job_id: str) -> None:
    """Starts the mailing at once when it is due; the scheduled releaser covers a failure here."""
    publish_job = functools.partial(fanout.publish_job, events.Publisher(clients.publisher))
    fanout.release_due(clients.firestore_client(), publish_job, datetime.now(UTC), only=job_id)


def create_notice(request: flask.Request) -> flask.Response:
    principal = access.require_staff(request, "admin")
    draft = web.parse_json(request, service.NoticeDraft)
    notice = service.create_notice(clients.firestore_client(), draft, principal.account_id, datetime.now(UTC))
    release_now(service.fanout_id(notice["id"], 1))
    body = {k: _iso(v) for k, v in notice.items() if k != "created_by"}
    return web.json_response(body, 201, {"Location": f"/notices/{notice['id']}"})


def correct_notice(request: flask.Request, notice_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin")
    if not NOTICE_ID.fullmatch(notice_id):
        raise web.Problem(404, "notice-not-found", "Not found", "No such notice.")
    draft = web.parse_json(request, service.CorrectionDraft)
    notice = service.correct_notice(
        clients.firestore_client(), notice_id, draft, principal.account_id, datetime.now(UTC)
    )
    release_now(service.fanout_id(notice_id, notice["current_version"]))
    body = {k: _iso(v) for k, v in notice.items() if k != "created_by"}
    return web.json_response(body, 201, {"Location": f"/notices/{notice_id}"})


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/notices", ("GET",), list_notices),
    web.Route("/notices/page", ("GET",), notices_page),
    web.Route("/notices/feed.atom", ("GET",), notices_feed),
    web.Route("/notices/slas/<sla_id>", ("GET",), get_sla),
    web.Route("/notices/<notice_id>", ("GET",), get_notice),
    web.Route("/staff/notices", ("POST",), create_notice),
    web.Route("/staff/notices/<notice_id>/versions", ("POST",), correct_notice),
)

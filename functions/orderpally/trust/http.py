"""HTTP routes of the trust report: the customer's own, and staff's with a reason (audited).

JSON by default; a page without JavaScript for `Accept: text/html` or `?format=html`, in
zh-TW or English (`?lang=`, else the account's language, else zh-TW).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import flask
import pydantic

from orderpally import clients, web
from orderpally.access import guard as access
from orderpally.accounts import preferred_language
from orderpally.config import settings
from orderpally.trust import rules

if TYPE_CHECKING:
    import jinja2

    from orderpally.trust import service

# The page loads nothing and runs nothing: its own inline style only (as the notices page).
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class ReportQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    lang: Literal["zh-TW", "en"] | None = None
    format: Literal["json", "html"] | None = None


class StaffReportQuery(ReportQuery):
    reason: str  # checked by access.require_staff_read; allowed here beside the others


@functools.cache
def _templates() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        undefined=jinja2.StrictUndefined,
    )
    # Times are stored and sent in UTC; the page shows them in Taiwan's time.
    env.filters["taipei"] = lambda iso: (
        datetime.fromisoformat(iso).astimezone(rules.TAIPEI).strftime("%Y-%m-%d %H:%M") if iso else "—"
    )
    return env


def _sources() -> service.Sources:
    # The report reads through most capabilities' services: loaded on first use, not at cold start.
    from orderpally.trust import service

    cfg = settings()
    return service.Sources(
        db=clients.firestore_client(),
        auth_app=clients.firebase_app(),
        deployment=rules.Deployment(
            region=cfg.region,
            buckets={
                "exports": cfg.exports_bucket,
                "attachments": cfg.attachments_bucket,
                "backups": cfg.backups_bucket,
            },
            encryption_at_rest=cfg.encryption_at_rest,
            backup_retention_days=cfg.backup_retention_days,
            session_lifetime=timedelta(seconds=cfg.session_lifetime_seconds),
            # As backups.exporters.exporter_for chooses: the emulator's export endpoint locally.
            snapshots_exported_locally="FIRESTORE_EMULATOR_HOST" in cfg.emulator_hosts,
        ),
    )


def _wants_html(request: flask.Request, query: ReportQuery) -> bool:
    if query.format:
        return query.format == "html"
    # A browser's Accept names text/html first; curl's */* and API clients get JSON.
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _answer(request: flask.Request, query: ReportQuery, report: dict[str, Any]) -> flask.Response:
    if not _wants_html(request, query):
        response = web.json_response(report)
    else:
        lang = query.lang or preferred_language(report["account"].get("language"))
        html = _templates().get_template("report.html").render(report=report, lang=lang)
        response = flask.Response(html, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Content-Language"] = lang
    response.headers["Referrer-Policy"] = "no-referrer"
    response.vary.update(("Accept", "Cookie", "Authorization"))
    return response


def own_report(request: flask.Request) -> flask.Response:
    # The report shows what the trail shows, and more of the same kind: the same readers.
    principal = access.require_audit_reader(request, "report")
    query = web.validate(request.args.to_dict(), ReportQuery)
    from orderpally.trust import service

    return _answer(request, query, service.for_customer(_sources(), principal.account_id))


def staff_report(request: flask.Request, account_id: str) -> flask.Response:
    principal, reason = access.require_staff_read(request, "support", "security", "admin")
    query = web.validate(request.args.to_dict(), StaffReportQuery)
    from orderpally.access.service import actor_of
    from orderpally.trust import service

    report = service.for_staff(
        _sources(), account_id, actor=actor_of(principal), reason=reason, client_address=access.client_address(request)
    )
    return _answer(request, query, report)


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/account/trust-report", ("GET",), own_report),
    web.Route("/staff/accounts/<account_id>/trust-report", ("GET",), staff_report),
)

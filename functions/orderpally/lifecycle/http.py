"""HTTP routes of the account lifecycle: the customer's own termination, and staff
termination, suspension and legal holds. Decode, check the caller, delegate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import flask
import pydantic

from orderpally import audit, clients, events, fields, web
from orderpally.access import guard as access
from orderpally.access.principal import Principal
from orderpally.config import settings
from orderpally.lifecycle import billing, certificates, data_map, rules, service
from orderpally.lifecycle import export as content_export


class CustomerTerminationBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    # "immediately", or the last day of service (Asia/Taipei) as YYYY-MM-DD.
    termination_date: str = pydantic.Field(max_length=20)

    @pydantic.field_validator("termination_date")
    @classmethod
    def _immediately_or_a_date(cls, value: str) -> str:
        if value != "immediately":
            try:
                date.fromisoformat(fields.iso_date(value))
            except ValueError:
                raise ValueError('must be "immediately" or a date as YYYY-MM-DD') from None
        return value

    def requested_date(self) -> date | None:
        return None if self.termination_date == "immediately" else date.fromisoformat(self.termination_date)


class StaffTerminationBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    basis: rules.StaffBasis
    reason: str = pydantic.Field(min_length=5, max_length=2000)
    termination_date: fields.IsoDate | None = None
    cure_period_days: int | None = pydantic.Field(default=None, ge=1, le=365)


class StaffCancellationBody(pydantic.BaseModel):
    """Undoing a staff action (a termination, a legal hold) needs a reason."""

    model_config = pydantic.ConfigDict(extra="forbid")

    reason: str = pydantic.Field(min_length=5, max_length=2000)


class SuspensionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    code: rules.SuspensionCode
    reason: str = pydantic.Field(min_length=5, max_length=2000)


class HoldBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    location_ids: list[str] = pydantic.Field(default_factory=list, max_length=50)
    reason: str = pydantic.Field(min_length=5, max_length=2000)
    authority: str = pydantic.Field(min_length=2, max_length=300)

    @pydantic.field_validator("location_ids")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = {loc.id for loc in data_map.load().locations}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown data-map locations: {', '.join(unknown)}")
        return value


def _actor(principal: Principal) -> audit.Actor:
    role = ",".join(sorted(principal.roles)) or None
    return audit.Actor(kind=principal.kind, id=principal.account_id, role=role)


def _valid_account_id(account_id: str) -> str:

    if not fields.ACCOUNT_ID.fullmatch(account_id):
        raise web.Problem(404, "account-not-found", "Not found", "No such account.")
    return account_id


def _serialise(record: dict | None) -> dict | None:
    if record is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items() if k != "user_deleted"}


def _effects() -> service.Effects:
    return service.effects(clients.firestore_client(), clients.firebase_app(), events.Publisher(clients.publisher))


def request_termination(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request, verified=True)
    now = datetime.now(UTC)
    # The sign-in's age is checked before the body: an old session learns nothing about it.
    service.require_recent_sign_in(principal.session_issued_at, now)
    body = web.parse_json(request, CustomerTerminationBody)
    record = service.request_termination(
        _effects(),
        principal.account_id,
        requested=body.requested_date(),
        session_issued_at=principal.session_issued_at,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=now,
    )
    return web.json_response(_serialise(record), 202)


def get_termination(request: flask.Request) -> flask.Response:
    principal = access.require_principal(request)
    if principal.kind == "staff":
        raise access.forbidden("Staff read accounts through /staff.")
    record = service.current_termination(clients.firestore_client(), principal.account_id)
    return web.json_response({"termination": _serialise(record)})


def cancel_termination(request: flask.Request) -> flask.Response:
    principal = access.require_customer(request, verified=True)
    service.cancel_termination(
        _effects(),
        principal.account_id,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return flask.Response(status=204)


def staff_terminate(request: flask.Request, account_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin")
    account_id = _valid_account_id(account_id)
    body = web.parse_json(request, StaffTerminationBody)
    record = service.terminate_by_staff(
        _effects(),
        account_id,
        basis=rules.Basis(body.basis),
        reason=body.reason,
        requested=body.termination_date,
        cure_period_days=body.cure_period_days,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return web.json_response(_serialise(record), 202)


def staff_cancel_termination(request: flask.Request, account_id: str) -> flask.Response:
    """Only staff undo a termination OrderPally started; the reason goes to the customer's trail."""
    principal = access.require_staff(request, "admin")
    account_id = _valid_account_id(account_id)
    body = web.parse_json(request, StaffCancellationBody)
    service.cancel_termination(
        _effects(),
        account_id,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
        reason=body.reason,
    )
    return flask.Response(status=204)


def staff_suspend(request: flask.Request, account_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin")
    account_id = _valid_account_id(account_id)
    suspending = request.method == "POST"
    body = web.parse_json(request, SuspensionBody) if suspending else None
    service.set_suspension(
        _effects(),
        account_id,
        suspended=suspending,
        code=body.code if body else None,
        reason=body.reason if body else None,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return flask.Response(status=204)


def staff_place_hold(request: flask.Request, account_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin", "security")
    account_id = _valid_account_id(account_id)
    body = web.parse_json(request, HoldBody)
    hold_id = service.place_hold(
        clients.firestore_client(),
        account_id,
        location_ids=body.location_ids,
        reason=body.reason,
        authority=body.authority,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return web.json_response({"id": hold_id, "account_id": account_id, "location_ids": body.location_ids}, 201)


def staff_release_hold(request: flask.Request, hold_id: str) -> flask.Response:
    principal = access.require_staff(request, "admin", "security")
    if not 1 <= len(hold_id) <= 64 or not hold_id.isalnum():
        raise web.Problem(404, "hold-not-found", "Not found", "No such legal hold.")
    # Ending a hold lets deletion go on: as accountable as placing it.
    body = web.parse_json(request, StaffCancellationBody)
    hold = service.release_hold(
        _effects(),
        hold_id,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
        reason=body.reason,
    )
    return web.json_response(_serialise(hold))


EXPORT_SCOPE = "export:create"


def _exporter(request: flask.Request) -> Principal:
    """The customer (session with a verified email, or their API key with the export scope)."""
    principal = access.require_principal(request)
    if principal.kind == "staff":
        raise access.forbidden("Staff cannot export a customer's content.")
    if principal.kind == "api_key" and not principal.has_scope(EXPORT_SCOPE):
        raise access.forbidden(f"This key lacks the {EXPORT_SCOPE} scope.")
    if principal.kind == "customer" and not principal.identity_proven:
        raise web.Problem(403, "email-not-verified", "Email not verified", "Verify your email address first.")
    return principal


def request_export(request: flask.Request) -> flask.Response:
    principal = _exporter(request)
    record = service.request_export(
        clients.firestore_client(),
        events.Publisher(clients.publisher),
        principal.account_id,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return web.json_response(_serialise(record), 202)


def _own_export(request: flask.Request, export_id: str) -> tuple[Principal, dict]:

    principal = _exporter(request)
    if not fields.ARCHIVE_ID.fullmatch(export_id):
        raise web.Problem(404, "export-not-found", "Not found", "No such export.")
    record = content_export.load(clients.firestore_client(), export_id) or {}
    # Another customer's export is indistinguishable from a missing one.
    if record.get("account_id") != principal.account_id:
        raise web.Problem(404, "export-not-found", "Not found", "No such export.")
    return principal, record


def get_export(request: flask.Request, export_id: str) -> flask.Response:
    _, record = _own_export(request, export_id)
    return web.json_response(_serialise({k: v for k, v in record.items() if k != "object"}))


def download_export(request: flask.Request, export_id: str) -> flask.Response:
    principal, record = _own_export(request, export_id)
    link = service.export_download(
        clients.firestore_client(),
        clients.storage_client().bucket(settings().exports_bucket),
        (clients.url_signing_credentials(), clients.storage_download_endpoint()),
        record,
        actor=_actor(principal),
        client_address=access.client_address(request),
        now=datetime.now(UTC),
    )
    return web.download_link(request, link, record["sha256"], record["size"])


class StaffReadQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    reason: str  # checked by access.require_staff_read


class CertificateQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    token: str = pydantic.Field(min_length=20, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


def _staff_read(request: flask.Request, account_id: str, what: str, exists: Callable[[str], bool]) -> str:
    """Checks a staff read; the service records it before the data leaves."""
    principal, reason = access.require_staff_read(request, "support", "security", "admin")
    web.validate(request.args.to_dict(), StaffReadQuery)
    account_id = _valid_account_id(account_id)
    service.record_staff_read(
        clients.firestore_client(),
        account_id,
        exists=exists,
        actor=_actor(principal),
        client_address=access.client_address(request),
        reason=reason,
        what=what,
        now=datetime.now(UTC),
    )
    return account_id


def staff_read_billing(request: flask.Request, account_id: str) -> flask.Response:
    """The account's balance, whether events wait behind a gap, and the events applied, newest first."""
    db = clients.firestore_client()
    account_id = _staff_read(request, account_id, "billing", lambda a: billing.has_account(db, a))
    state = billing.read_state(db, account_id)
    now = datetime.now(UTC)
    body = {
        "account_id": account_id,
        "balance_due": state.balance_due,
        "outstanding_amount": state.outstanding,
        "currency": state.currency,
        "last_sequence": state.last_sequence,
        "highest_seen_sequence": state.highest_seen,
        "waiting_for_sequence": state.waiting_for,
        "gap_since": state.gap_since.isoformat() if state.gap_since else None,
        "gap_overdue": billing.gap_overdue(state, now),
        "applied_events": [_serialise(e) for e in billing.applied_events(db, account_id)],
    }
    return web.json_response(body)


def staff_read_certificate(request: flask.Request, account_id: str) -> flask.Response:
    """The whole deletion certificate, holds included, for staff."""
    db = clients.firestore_client()
    account_id = _staff_read(
        request, account_id, "deletion_certificate", lambda a: service.deletion_certificate(db, a) is not None
    )
    found = service.deletion_certificate(db, account_id)
    if found is None:
        raise web.Problem(404, "certificate-not-found", "Not found", "This account has no deletion certificate yet.")
    return web.json_response(_serialise_deep(certificates.staff_view(account_id, found)))


def customer_certificate(request: flask.Request) -> flask.Response:
    """The certificate behind the secret link mailed at termination; it needs no sign-in,
    since the account it certifies is gone."""
    query = web.validate(request.args.to_dict(), CertificateQuery)
    found = certificates.for_token(clients.firestore_client(), query.token)
    if found is None:
        raise web.Problem(404, "certificate-not-found", "Not found", "This link is not valid.")
    response = web.json_response(found)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _serialise_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _serialise_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_serialise_deep(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/account/exports", ("POST",), request_export),
    web.Route("/account/exports/<export_id>", ("GET",), get_export),
    web.Route("/account/exports/<export_id>/download", ("GET",), download_export),
    web.Route("/account/deletion-certificate", ("GET",), customer_certificate),
    web.Route("/account/termination", ("POST",), request_termination),
    web.Route("/account/termination", ("GET",), get_termination),
    web.Route("/account/termination", ("DELETE",), cancel_termination),
    web.Route("/staff/accounts/<account_id>/termination", ("POST",), staff_terminate),
    web.Route("/staff/accounts/<account_id>/termination/cancellation", ("POST",), staff_cancel_termination),
    web.Route("/staff/accounts/<account_id>/suspension", ("POST", "DELETE"), staff_suspend),
    web.Route("/staff/accounts/<account_id>/legal-holds", ("POST",), staff_place_hold),
    web.Route("/staff/legal-holds/<hold_id>", ("DELETE",), staff_release_hold),
    web.Route("/staff/accounts/<account_id>/billing", ("GET",), staff_read_billing),
    web.Route("/staff/accounts/<account_id>/deletion-certificate", ("GET",), staff_read_certificate),
)

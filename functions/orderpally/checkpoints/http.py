"""HTTP routes of the audit checkpoints: the public log, and a customer's proofs.

`GET /notices/checkpoints` (public, no sign-in): the signed checkpoints, newest first, each
with the public key it was signed with. `GET /account/audit-trail/proof` and
`GET /account/audit-trail/consistency` (the customer, or a key with audit:read): the bundle
and the proof tools/orderpally_verify checks offline.
"""

from __future__ import annotations

import flask
import pydantic

from orderpally import clients, web
from orderpally.access import guard as access


class ProofQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    since: int | None = pydantic.Field(default=None, ge=1, le=2**62)  # a kept checkpoint's tree size


class HistoryQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    page_size: int = pydantic.Field(default=20, ge=1, le=100)
    page_token: str | None = pydantic.Field(default=None, max_length=300)


class ConsistencyQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    first: int = pydantic.Field(ge=1, le=2**62)
    second: int = pydantic.Field(ge=1, le=2**62)


def history(request: flask.Request) -> flask.Response:
    from orderpally.checkpoints import service

    query = web.validate(request.args.to_dict(), HistoryQuery)
    below = None
    if query.page_token:
        below = web.decode_page_token(query.page_token).get("below")
        if not isinstance(below, int) or isinstance(below, bool) or below < 1:
            raise web.invalid_page_token()
    found = service.history(clients.firestore_client(), query.page_size + 1, below)
    shown = found[: query.page_size]
    token = web.encode_page_token({"below": shown[-1]["tree_size"]}) if len(found) > query.page_size else None
    response = web.json_response({"checkpoints": shown, "next_page_token": token})
    # Public and the same for everyone; a new one comes at most hourly.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def _trail_reader(request: flask.Request) -> str:
    return access.require_audit_reader(request, "trail").account_id


def trail_proof(request: flask.Request) -> flask.Response:
    from orderpally import audit
    from orderpally.access import service as access_service
    from orderpally.checkpoints import service

    account_id = _trail_reader(request)
    query = web.validate(request.args.to_dict(), ProofQuery)
    db = clients.firestore_client()
    chain = audit.account_chain(db, account_id)
    bundle = service.trail_proof(
        db,
        account_id,
        lambda seq: audit.chain_entries(chain, seq),
        access_service.as_the_customer_sees,
        since=query.since,
    )
    return web.json_response(bundle)


def consistency(request: flask.Request) -> flask.Response:
    from orderpally.checkpoints import service

    _trail_reader(request)
    query = web.validate(request.args.to_dict(), ConsistencyQuery)
    return web.json_response(service.consistency(clients.firestore_client(), query.first, query.second))


# Each route with its path; a function serves those under its catalogue path_prefix.
ROUTES = (
    web.Route("/notices/checkpoints", ("GET",), history),
    web.Route("/account/audit-trail/proof", ("GET",), trail_proof),
    web.Route("/account/audit-trail/consistency", ("GET",), consistency),
)

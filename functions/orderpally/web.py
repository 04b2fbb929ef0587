"""HTTP plumbing shared by every HTTP function.

JSON bodies validated with pydantic, RFC 9457 problem responses, a small
router (werkzeug's, which Flask already brings), and one wrapper that turns
every failure into a problem document: clients never see a stack trace, and a
backend outage is a 503 they may retry, not a 500.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypeVar

import flask
import pydantic
from werkzeug.datastructures import HeaderSet
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from orderpally import clients, structured_logging
from orderpally.config import settings

PROBLEM_TYPE_PREFIX = "urn:orderpally:problem:"
MAX_JSON_BYTES = 64 * 1024

Model = TypeVar("Model", bound=pydantic.BaseModel)
Handler = Callable[..., flask.Response]

_log = structured_logging.get_logger("orderpally.web")


@dataclass
class Problem(Exception):
    """An error the client can act on, rendered as application/problem+json."""

    status: int
    slug: str
    title: str
    detail: str = ""
    field: str | None = None
    headers: dict[str, str] = dataclass_field(default_factory=dict)
    extra: dict[str, Any] = dataclass_field(default_factory=dict)

    def to_response(self, instance: str | None = None) -> flask.Response:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.field:
            body["field"] = self.field
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        response = json_response(body, self.status, self.headers)
        response.mimetype = "application/problem+json"
        return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(
        json.dumps(data, ensure_ascii=False, default=str), status=status, mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _field_path(location: Iterable[Any]) -> str:
    return ".".join(str(part) for part in location) or "body"


def parse_json(request: flask.Request, model: type[Model], *, max_bytes: int = MAX_JSON_BYTES) -> Model:
    """The request body as `model`, or a Problem naming what is wrong.

    Error messages never echo the submitted values: they may be passwords.
    """
    if request.mimetype != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send a JSON body with Content-Type: application/json.",
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise Problem(413, "body-too-large", "Request body too large", f"The body may be at most {max_bytes} bytes.")
    raw = request.get_data(cache=True)
    if len(raw) > max_bytes:
        raise Problem(413, "body-too-large", "Request body too large", f"The body may be at most {max_bytes} bytes.")
    try:
        data = json.loads(raw)
    # ValueError: an integer past Python's digit limit; RecursionError: nesting too deep to parse.
    except (ValueError, RecursionError):
        raise Problem(400, "malformed-json", "Malformed JSON", "The body is not valid JSON.") from None
    return validate(data, model)


def validate(data: Any, model: type[Model]) -> Model:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = [
            {"field": _field_path(err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        first = errors[0]
        raise Problem(
            422,
            "validation-error",
            "Invalid request",
            f"{first['field']}: {first['message']}",
            field=first["field"],
            extra={"errors": errors},
        ) from None


def require_method(request: flask.Request, *methods: str) -> None:
    """For single-purpose functions (scheduled jobs) that take one method."""
    if request.method not in methods:
        allowed = ", ".join(methods)
        raise Problem(405, "method-not-allowed", "Method not allowed", f"Use {allowed}.", headers={"Allow": allowed})


@dataclass(frozen=True)
class Route:
    """One route: its whole path (werkzeug rule syntax), its methods and its handler."""

    path: str
    methods: tuple[str, ...]
    handler: Handler

    def under(self, prefix: str) -> bool:
        return self.path == prefix or self.path.startswith(prefix.rstrip("/") + "/")


class Router:
    """Routes one HTTP function's requests by path and method."""

    def __init__(self) -> None:
        self._map = Map(strict_slashes=False, merge_slashes=False)
        self._handlers: dict[str, Handler] = {}

    @classmethod
    def under(cls, prefix: str, *tables: Iterable[Route]) -> Router:
        """The router of a function served under `prefix` (its catalogue path_prefix): every
        route of `tables` below it, and no other."""
        router = cls()
        for table in tables:
            for route in table:
                if route.under(prefix):
                    router.route(route.path, list(route.methods))(route.handler)
        return router

    def route(self, path: str, methods: list[str]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = f"{handler.__module__}.{handler.__qualname__}"
            self._map.add(Rule(path, methods=methods, endpoint=endpoint))
            self._handlers[endpoint] = handler
            return handler

        return register

    def rules(self) -> list[tuple[str, set[str]]]:
        """(path, methods) for every route, for contract tests."""
        return [(rule.rule, set(rule.methods or ()) - {"HEAD", "OPTIONS"}) for rule in self._map.iter_rules()]

    def dispatch(self, request: flask.Request) -> flask.Response:
        return serve(request, self._dispatch)

    def _dispatch(self, request: flask.Request) -> flask.Response:
        adapter = self._map.bind("localhost", path_info=request.path)
        try:
            endpoint, arguments = adapter.match(method=request.method)
        except NotFound:
            raise Problem(404, "not-found", "Not found", "No such resource.") from None
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or ()))
            raise Problem(
                405, "method-not-allowed", "Method not allowed", f"Use one of: {allowed}.", headers={"Allow": allowed}
            ) from None
        return self._handlers[endpoint](request, **arguments)


# Browsers on the frontends' own origins (FRONTEND_ORIGINS) call the API with the session
# cookie, so they get CORS answers; any other origin gets none, so its pages cannot read a
# response, and the CSRF checks refuse its writes. API keys are for servers: a browser may
# not send Authorization across origins.
CORS_REQUEST_HEADERS = ("Content-Type", "X-CSRF-Token", "Idempotency-Key")
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_EXPOSED_HEADERS = ("Retry-After", "Content-Disposition", "Location")
CORS_MAX_AGE_SECONDS = 600


def _frontend_origin(request: flask.Request) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin_allowed(origin, settings().frontend_origins) else None


def _preflight(request: flask.Request) -> flask.Response:
    """Answers a CORS preflight: allowed for a frontend's origin, a 403 problem for any other."""
    origin = _frontend_origin(request)
    if origin is None:
        return Problem(
            403, "cors-origin", "Cross-origin request refused", "This origin is not one of the frontends."
        ).to_response(request.path)
    asked = {h.strip().lower() for h in (request.headers.get("Access-Control-Request-Headers") or "").split(",")}
    unknown = sorted(asked - {h.lower() for h in CORS_REQUEST_HEADERS} - {""})
    if request.headers["Access-Control-Request-Method"] not in CORS_METHODS or unknown:
        detail = f"Allowed methods: {', '.join(CORS_METHODS)}; headers: {', '.join(CORS_REQUEST_HEADERS)}."
        return Problem(403, "cors-request", "Cross-origin request refused", detail).to_response(request.path)
    response = flask.Response(status=204)
    response.access_control_allow_methods = HeaderSet(CORS_METHODS)
    response.access_control_allow_headers = HeaderSet(CORS_REQUEST_HEADERS)
    response.access_control_max_age = CORS_MAX_AGE_SECONDS
    return response


def _with_cors(request: flask.Request, response: flask.Response) -> flask.Response:
    if "Origin" in request.headers:
        response.vary.add("Origin")
    origin = _frontend_origin(request)
    if origin is not None:
        response.access_control_allow_origin = origin
        response.access_control_allow_credentials = True
        response.access_control_expose_headers = HeaderSet(CORS_EXPOSED_HEADERS)
    return response


def serve(request: flask.Request, handler: Callable[[flask.Request], flask.Response]) -> flask.Response:
    """Runs `handler` with the request's trace bound, turning every failure into a problem response."""
    token = structured_logging.bind_trace(structured_logging.trace_from_headers(request.headers, settings().project_id))
    try:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = _preflight(request)
        else:
            response = _answer(request, handler)
    finally:
        structured_logging.unbind_trace(token)
    if response.status_code == 204:
        # No content, so no content type (Flask's default would say text/html).
        response.headers.pop("Content-Type", None)
    return _with_cors(request, response)


def _answer(request: flask.Request, handler: Callable[[flask.Request], flask.Response]) -> flask.Response:
    try:
        return handler(request)
    except Problem as problem:
        return problem.to_response(request.path)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no stack trace leaves
        if clients.backend_unavailable(exc):
            structured_logging.log(
                _log, logging.WARNING, "backing service unavailable", path=request.path, error_type=type(exc).__name__
            )
            return Problem(
                503,
                "service-unavailable",
                "Service temporarily unavailable",
                "Try again shortly.",
                headers={"Retry-After": "5"},
            ).to_response(request.path)
        _log.exception("unhandled error", extra={"fields": {"path": request.path}})
        return Problem(500, "internal-error", "Internal error", "Something went wrong on our side.").to_response(
            request.path
        )


def endpoint(handler: Callable[[flask.Request], flask.Response]) -> Callable[[flask.Request], flask.Response]:
    """Wraps a single-purpose HTTP entry point in `serve`."""

    @functools.wraps(handler)
    def wrapped(request: flask.Request) -> flask.Response:
        return serve(request, handler)

    return wrapped


def encode_page_token(position: dict[str, Any]) -> str:
    """An opaque page token for a list's next page: where the last page ended, as JSON."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any]:
    """The position in a page token, or a 400 problem; callers check the position's fields."""
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        position = None
    if not isinstance(position, dict):
        raise invalid_page_token()
    return position


def invalid_page_token() -> Problem:
    return Problem(400, "invalid-page-token", "Invalid page token", "Use a page_token from a response.")


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Is `origin` (a request's Origin header) one of `allowed` (the configured frontends)?"""
    return origin is not None and origin.rstrip("/") in allowed


def repr_digest(sha256_hex: str) -> str:
    """An RFC 9530 `Repr-Digest` value for bytes with this SHA-256: `sha-256=:<base64>:`."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def download_link(request: flask.Request, link: dict[str, Any], sha256: str, size: int) -> flask.Response:
    """A finished archive, as a short-lived signed URL to it in Cloud Storage (never the bytes:
    a function's response is capped at 32 MiB).

    303 to the URL, with the link in a JSON body too; 200 with only the JSON for a caller that
    asks for JSON, since fetch() follows a redirect itself and could not read that body.
    """
    body = {
        "url": link["url"],
        "expires_at": link["expires_at"].isoformat(),
        "sha256": sha256,
        "repr_digest": repr_digest(sha256),
        "size": size,
    }
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return json_response(body)
    return json_response(body, 303, headers={"Location": link["url"]})


def framework_error(exc: Exception) -> flask.Response:
    """Errors raised by the framework before a function runs (a path its router cannot match,
    such as one with a newline) are problem documents too, never its HTML pages."""
    from werkzeug.exceptions import HTTPException

    status = exc.code if isinstance(exc, HTTPException) and exc.code else 500
    slug = {404: "not-found", 405: "method-not-allowed"}.get(status, "request-refused" if status < 500 else "internal")
    title = exc.name if isinstance(exc, HTTPException) else "Internal error"
    return Problem(status, slug, title).to_response()

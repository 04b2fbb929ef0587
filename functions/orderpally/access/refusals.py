"""The refusals every part of access answers with, as web.Problems (the guard's, the service's, the rules')."""

from __future__ import annotations

from orderpally import web


def unauthenticated(detail: str = "Sign in first.") -> web.Problem:
    return web.Problem(
        401, "unauthenticated", "Authentication required", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str = "You may not do this.") -> web.Problem:
    return web.Problem(403, "forbidden", "Forbidden", detail)

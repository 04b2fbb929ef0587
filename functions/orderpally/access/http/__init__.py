"""The HTTP edge of access: one module of routes per function that serves them.

`auth` (sign-up, sign-in, sessions, passwords) and `facebook` are the auth function's;
`account` (API keys, the audit trail, staff reads and roles) the account and staff functions'.
Their handlers authenticate, parse, call `access.service` and serialise (cookies included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderpally.access import service


def ports() -> service.Ports:
    """The service's ports, made of this process's clients (the composition edge)."""
    from orderpally import clients, events
    from orderpally.access import identity_toolkit, service
    from orderpally.config import settings
    from orderpally.messaging.requests import sender

    app = clients.firebase_app()
    publisher = events.Publisher(clients.publisher)
    return service.Ports(
        db=clients.firestore_client(),
        auth_app=app,
        identity=identity_toolkit.IdentityToolkit(app),
        pepper=settings().secret("API_KEY_PEPPER"),
        publisher=publisher,
        publish_mail=sender(publisher),
    )

"""The deployed functions' publisher, for tests that publish as a function would."""

from __future__ import annotations

from orderpally import clients, events
from orderpally.messaging import requests
from orderpally.messaging.requests import EmailRequest, SendEmail, sender


def publisher() -> events.Publisher:
    return events.Publisher(clients.publisher)


def send_email() -> SendEmail:
    """Mail requests published to the emulator's notice-email topic, as the functions send them."""
    return sender(publisher())


def request_email(request: EmailRequest) -> str:
    """Publishes one mail request, as a function would."""
    return requests.request_email(publisher(), request)

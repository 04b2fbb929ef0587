"""How any capability asks for an email: publish one request to the notice-email topic.

The notice-email function renders `template` in the recipient's language (a
stored account preference wins over `language`) and sends it exactly once per
`idempotency_key`, however often the request is delivered or published.
"""

from __future__ import annotations

from typing import Any

import pydantic

from orderpally import events, fields
from orderpally.accounts import Language

TOPIC = "notice-email"
MESSAGE_TYPE = "notice_email.requested"


class EmailRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    # Stable for the thing being announced, e.g. "signup-verify:<uid>:<n>": a
    # duplicate publish with the same key sends nothing more.
    idempotency_key: str = pydantic.Field(min_length=1, max_length=300)
    template: str = pydantic.Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    to_email: fields.MailAddress
    account_id: str | None = pydantic.Field(default=None, max_length=128)
    language: Language | None = None
    data: dict[str, Any] = pydantic.Field(default_factory=dict)


def request_email(request: EmailRequest) -> str:
    """Publishes the request; returns the Pub/Sub message id."""
    return events.publish(TOPIC, MESSAGE_TYPE, request.model_dump(mode="json"))

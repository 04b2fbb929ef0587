"""Pub/Sub CloudEvents as functions-framework hands them to a function."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from cloudevents.http import CloudEvent


def pubsub_event(
    body: Any,
    *,
    event_id: str = "1",
    time: datetime | None = None,
    topic: str = "heartbeat",
    raw: bytes | None = None,
) -> CloudEvent:
    data = raw if raw is not None else json.dumps(body, default=str).encode()
    published = (time or datetime.now(UTC)).isoformat()
    return CloudEvent(
        {
            "id": event_id,
            "source": f"//pubsub.googleapis.com/projects/demo-orderpally/topics/{topic}",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "time": published,
        },
        {"message": {"data": base64.b64encode(data).decode(), "messageId": event_id, "publishTime": published}},
    )


def envelope(message_type: str, data: dict[str, Any], schema_version: int = 1) -> dict[str, Any]:
    return {"schema_version": schema_version, "type": message_type, "data": data}

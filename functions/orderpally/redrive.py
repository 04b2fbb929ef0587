"""Redrives messages a crash kept from being published after their state was written.

Export and records requests are written to Firestore, then their build message
is published. A crash between the two leaves a request queued with no message
on its way; this sweep (the `archive-redrive` schedule) publishes it again.
The builders do nothing for a request that is already ready, so a redrive of
one merely slow is harmless. Mails staged in the outbox with a state change
(`messaging.requests.stage_email`) are redriven the same way; their idempotency
key keeps a redriven mail to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orderpally import events
from orderpally.lifecycle import export
from orderpally.messaging import requests as mail
from orderpally.records import service as records

STALE_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Queue:
    collection: str
    id_field: str
    topic: str
    message_type: str


QUEUES = (
    Queue(export.EXPORTS, "export_id", export.TOPIC, export.MESSAGE_TYPE),
    Queue(records.RECORDS, "request_id", records.TOPIC, records.MESSAGE_TYPE),
)


def redrive(db: Any, publisher: events.Publisher, now: datetime, limit: int = 200) -> dict[str, int]:
    """Publishes again every request queued for longer than STALE_AFTER (and not redriven since)."""
    from google.cloud.firestore import FieldFilter

    counts = {}
    for queue in QUEUES:
        sent = 0
        for snap in (
            db.collection(queue.collection).where(filter=FieldFilter("status", "==", "queued")).limit(limit).stream()
        ):
            request = snap.to_dict()
            last = request.get("redriven_at") or request["requested_at"]
            if last > now - STALE_AFTER or request.get("expires_at", now + STALE_AFTER) <= now:
                continue
            message = {queue.id_field: snap.id, "account_id": request["account_id"]}
            publisher.publish(queue.topic, queue.message_type, message)
            snap.reference.update({"redriven_at": now})
            sent += 1
        counts[queue.collection] = sent
    counts[mail.OUTBOX] = mail.redrive_staged(db, now, STALE_AFTER, mail.sender(publisher), limit)
    return counts

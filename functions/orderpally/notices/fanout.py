"""Mails one notice version to every affected customer, resumably.

A mailing walks the accounts in document-id order, a page at a time, and
publishes the page's affected customers as notice-email batches: one message
per `batch_size` recipients, carrying the notice once and an idempotency key per
customer. The notice-email function sends a batch over one relay connection and
claims and settles its per-customer ledger a chunk at a time (messaging/delivery.py).
The cursor is saved only after a page's batches are all accepted by Pub/Sub, so a
crash repeats at most one page; the repeated batches carry the same keys, so the
ledger sends nobody a second mail. Past its time budget a run hands over to a
fresh message instead of running into the function timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pydantic

from orderpally import accounts, events, structured_logging
from orderpally.messaging import requests as email_requests
from orderpally.messaging.requests import EmailBatch, Recipient
from orderpally.notices import service, store

if TYPE_CHECKING:
    from google.cloud.firestore import Client

TOPIC = "notice-fanout"
MESSAGE_TYPE = "notice_fanout.requested"
TEMPLATE = "service_notice"
# Accounts that still hear from us: a terminated account has no service left to change.
REACHABLE = ("active", "suspended", "terminating")
# A run that stopped updating its job this long ago has died; the releaser hands the job out again.
STALE_AFTER = timedelta(minutes=15)
LEASE = timedelta(minutes=10)
# Recipients per notice-email message: small enough that a batch is sent well inside the
# notice-email function's time budget at a production relay's pace (tens of mails a second
# over one connection), large enough that its ledger is written in few commits.
BATCH_SIZE = 100

_log = structured_logging.get_logger("orderpally.notices")


class FanoutMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    job_id: str = pydantic.Field(pattern=r"^[0-9]{8}-[0-9a-f]{10}-v[0-9]{1,4}$")


@dataclass(frozen=True)
class Ports:
    db: Client
    # Publishes the batches and returns once Pub/Sub has accepted every one.
    publish_emails: Callable[[Sequence[EmailBatch]], None]
    continue_later: Callable[[str], object]
    notices_url: str
    page_size: int = 500
    batch_size: int = BATCH_SIZE
    time_budget_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic


def notice_data(notice_id: str, notice: dict, version: dict, url: str) -> dict[str, Any]:
    """What the service_notice template shows: the same for every recipient of the version."""
    return {
        "notice_id": notice_id,
        "kind": notice["kind"],
        "version": version["version"],
        "effective_date": version["effective_date"],
        "text": version["text"],
        "correction_note": version.get("correction_note") or "",
        "notice_url": f"{url}?id={notice_id}",
    }


def recipient_for(notice_id: str, version: dict, account_id: str, account: dict) -> Recipient:
    """The customer's mail of the version; its key makes it one mail however often it is requested."""
    return Recipient(
        idempotency_key=f"notice:{notice_id}:v{version['version']}:{account_id}",
        to_email=account.get("email") or "",
        account_id=account_id,
    )


def batches_of(recipients: Sequence[Recipient], data: dict[str, Any], size: int) -> list[EmailBatch]:
    return [
        EmailBatch(template=TEMPLATE, data=data, recipients=list(recipients[start : start + size]))
        for start in range(0, len(recipients), size)
    ]


def _take_lease(db: Client, job_id: str, now: datetime) -> dict[str, Any] | None:
    """The job, leased to this run; None when done. Raises RetryableError while another run holds it."""
    claim = store.claim_fanout(db, job_id, now, LEASE)
    if claim.finished == "missing":
        raise events.PermanentError("no such mailing")
    if claim.finished is not None:
        return None
    if claim.busy:
        raise events.RetryableError("the mailing is running elsewhere")
    return claim.entry


def run(ports: Ports, job_id: str, now: Callable[[], datetime]) -> str:
    """Advances the mailing; returns "done", "continued" or "already-done"."""
    db = ports.db
    with events.contention_is_retryable("the mailing"):
        job = _take_lease(db, job_id, now())
    if job is None:
        return "already-done"
    notice_id, number = job["notice_id"], int(job["version"])
    found = service.notice_and_version(db, notice_id, number)
    if found is None:
        raise events.PermanentError("the mailing's notice is missing")
    notice, version_record = found
    if version_record["published_at"] > now():
        raise events.PermanentError("the notice is not published yet")
    audience = service.Audience.model_validate(notice["affects"])
    data = notice_data(notice_id, notice, version_record, ports.notices_url)
    cursor = job.get("cursor")
    started = ports.clock()
    while True:
        page = accounts.page_in_id_order(db, cursor, ports.page_size)
        recipients = []
        for account_id, account in page:
            if account.get("status") in REACHABLE and audience.includes(account):
                try:
                    recipients.append(recipient_for(notice_id, version_record, account_id, account))
                except pydantic.ValidationError:  # no usable address on file: nothing to send
                    structured_logging.log(_log, logging.WARNING, "no usable address", account_id=account_id)
        ports.publish_emails(batches_of(recipients, data, ports.batch_size))
        if page:
            cursor = page[-1][0]
        if len(page) < ports.page_size:
            store.finish_fanout(db, job_id, cursor, len(recipients), len(page), now())
            structured_logging.log(_log, logging.INFO, "mailing done", job_id=job_id)
            return "done"
        store.save_fanout_progress(db, job_id, cursor, len(recipients), len(page), now(), LEASE)
        if ports.clock() - started > ports.time_budget_seconds:
            ports.continue_later(job_id)
            store.hand_over_fanout(db, job_id, now())
            return "continued"


def release_due(
    db: Client, publish: Callable[[str], None], now: datetime, *, limit: int = 100, only: str | None = None
) -> int:
    """Hands out mailings whose version is published and nobody is working on; returns how many."""
    released = 0
    for job_id, job in store.fanouts_to_release(db, limit, only):
        if job["status"] == "done" or job["due_at"] > now:
            continue
        stale = job.get("updated_at") is None or job["updated_at"] < now - STALE_AFTER
        if job["status"] != "pending" and not stale:
            continue
        publish(job_id)
        store.mark_fanout_queued(db, job_id, now)
        released += 1
    return released


def publish_job(publisher: events.Publisher, job_id: str) -> None:
    """Starts (or continues) a fan-out job: its next page runs in a fresh invocation."""
    publisher.publish(TOPIC, MESSAGE_TYPE, {"job_id": job_id})


def publish_emails(publisher: events.Publisher, batches: Sequence[EmailBatch]) -> None:
    """Publishes a page's batches at once, then waits: the cursor moves only when Pub/Sub holds
    every batch of the page."""
    futures = [
        publisher.publish_async(email_requests.TOPIC, email_requests.MESSAGE_TYPE, batch.model_dump(mode="json"))
        for batch in batches
    ]
    for future in futures:
        future.result(timeout=60)

"""The use cases of a report's intake, called alike by the intake route and the deadline
schedule: taking a report in (the rate limits, storing it), the steps after it is stored
(its history, the acknowledgement, the reporter's trail, the on-call page), resumed when a
crash cut them off, and the sweep that alerts staff to deadlines near or past."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import accounts, audit, events, limiter, structured_logging
from orderpally.config import settings
from orderpally.incidents import rules, service
from orderpally.messaging.requests import SendEmail, mail

if TYPE_CHECKING:
    from google.cloud.firestore import Client

ANONYMOUS_PER_ADDRESS = limiter.Limit("incident-address", 5, timedelta(hours=1))
CUSTOMER_PER_ACCOUNT = limiter.Limit("incident-account", 20, timedelta(hours=1))
ALERT_DEADLINE = "incident-deadline"
INTAKE_FAULTS = "incident_intake"  # the fault suite's crash points between intake steps

_log = structured_logging.get_logger("orderpally.incidents")


def table() -> dict:
    """The deadlines per severity, as configured."""
    return rules.parse_deadlines(settings().incident_deadlines)


def receive(
    db: Client,
    send_email: SendEmail,
    report: service.Report,
    account_id: str | None,
    address: str | None,
    idempotency_key: str | None,
    now: datetime,
) -> service.Submitted:
    """Takes a report in from a signed-in customer (`account_id`) or anonymously, within the
    reporter's rate, and runs the intake steps after it (or resumes a retry's)."""
    email = accounts.email_of(db, account_id) if account_id else None
    reporter = service.Reporter(account_id, email, address)
    if not service.is_retry(db, reporter, idempotency_key):
        if account_id:
            limiter.hit(db, CUSTOMER_PER_ACCOUNT, account_id, now)
        else:
            limiter.hit(db, ANONYMOUS_PER_ADDRESS, address or "unknown", now)
    done = service.submit(db, report, reporter, idempotency_key, table(), now)
    # The report is stored: an outage in the steps after it leaves them to a retry or the
    # deadline sweep, and the reporter still gets the reference.
    with events.left_for_later("incident intake steps"):
        if done.duplicate:
            resume_intake(db, send_email, done.reference, address, now)
        else:
            tokens = (done.status_token or "", done.confirm_token)
            finish_intake(db, send_email, done.reference, done.incident, tokens, address, now)
    return done


def page_on_call(db: Client, send_email: SendEmail, reference: str, incident: dict[str, Any], now: datetime) -> None:
    """Pages the security on-call for a confirmed report in a critical category.

    The page is requested before it is marked sent, under a fixed idempotency key: a
    crash in between repeats the request (the mail goes out once), never loses it,
    and the deadline check pages whatever is still unmarked.
    """
    if incident["category"] not in rules.CRITICAL_CATEGORIES or not incident["confirmed"] or incident.get("paged_at"):
        return
    mail(
        send_email,
        "incident_page",
        settings().security_oncall_email,
        f"incident_page:{reference}",
        None,
        "en",
        reference=reference,
        category=incident["category"],
        severity=incident["severity"],
        first_response_due=incident["first_response_due"].isoformat(),
        staff_path=f"/staff/incidents/{reference}",
    )
    if service.mark_paged(db, reference, now):
        service.history(db, reference, "incident.paged", audit.SYSTEM)


def finish_intake(
    db: Client,
    send_email: SendEmail,
    reference: str,
    incident: dict[str, Any],
    tokens: tuple[str, str | None],
    address: str | None,
    now: datetime,
    resumed: bool = False,
) -> None:
    """Runs the intake steps still pending, marking each done.

    A resumed intake may find a step done but not marked: trail entries are then
    appended only if missing, and mails carry fixed keys, so nothing happens twice.
    """
    account_id = incident.get("reporter_account_id")

    def write(chain: audit.Chain, event: audit.AuditEvent) -> None:
        # Staged for the trail's sequencer: the reporter does not wait on the chain's lock.
        (audit.append_once if resumed else audit.enqueue)(chain, event)

    def history() -> None:
        actor = service.reporter_actor(incident)
        write(
            service.chain(db, reference),
            audit.AuditEvent("incident.received", actor, address, None, {"category": incident["category"]}),
        )

    def acknowledgement() -> None:
        # If the first mail was requested already, this one is dropped as a duplicate; its links stay valid.
        mail(
            send_email,
            "incident_received",
            incident["contact_email"],
            f"incident_received:{reference}",
            account_id,
            incident.get("language"),
            reference=reference,
            **service.links(reference, *tokens),
        )

    def customer_trail() -> None:
        if account_id:
            actor = audit.Actor("customer", account_id)
            write(
                audit.account_chain(db, account_id),
                audit.AuditEvent("incident.reported", actor, address, None, {"reference": reference}),
            )

    def page() -> None:
        page_on_call(db, send_email, reference, incident, now)

    steps = {"history": history, "acknowledgement": acknowledgement, "customer_trail": customer_trail, "page": page}
    try:
        for step in service.INTAKE_STEPS:
            if step in (incident.get("intake_pending") or []):
                events.inject_fault(db, INTAKE_FAULTS, f"before:{step}")
                steps[step]()
                events.inject_fault(db, INTAKE_FAULTS, f"after:{step}")
                service.intake_step_done(db, reference, step)
    except Exception:
        # A retry may take over at once; a process that dies here leaves it to the lease.
        service.release_intake(db, reference)
        raise


def resume_intake(db: Client, send_email: SendEmail, reference: str, address: str | None, now: datetime) -> bool:
    """Finishes an intake a crash left part-way, unless it is still running; returns whether it did."""
    incident = service.claim_unfinished_intake(db, reference, now)
    if incident is None:
        return False
    tokens = service.new_intake_tokens(db, reference, incident)
    finish_intake(db, send_email, reference, incident, tokens, address, now, resumed=True)
    return True


def check_deadlines(db: Client, send_email: SendEmail, now: datetime) -> dict[str, int]:
    """Alerts staff about open incidents near or past a deadline, once per incident, deadline and kind."""
    warn = timedelta(minutes=settings().incident_warn_minutes)
    sent = 0
    for reference in service.unfinished_intakes(db, now):
        resume_intake(db, send_email, reference, None, now)
    for reference, incident in service.open_incidents(db):
        page_on_call(db, send_email, reference, incident, now)  # a page that failed to go out earlier
        for alert in rules.due_alerts(incident, now, warn):
            due = incident[f"{alert.deadline}_due"]
            structured_logging.log(
                _log,
                logging.ERROR if alert.kind == "overdue" else logging.WARNING,
                "incident deadline",
                reference=reference,
                deadline=alert.deadline,
                kind=alert.kind,
                alert=ALERT_DEADLINE,
            )
            mail(
                send_email,
                "incident_deadline",
                settings().security_oncall_email,
                f"incident_deadline:{reference}:{alert.deadline}:{alert.kind}:{due.isoformat()}",
                None,
                "en",
                reference=reference,
                deadline=alert.deadline,
                kind=alert.kind,
                severity=incident["severity"],
                due_at=due.isoformat(),
                staff_path=f"/staff/incidents/{reference}",
            )
            sent += 1
    return {"alerts": sent}

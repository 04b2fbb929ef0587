"""Every entry point of the bundle. Each one decodes, delegates, responds.

The catalogue (infra/functions.yaml) names these functions; the rules live in
orderpally/<capability>/. Clients are created lazily in orderpally.clients.

The bundle serves every function, but each deployed function runs only one entry
point: so each imports its capability's modules on its first call, and a cold
start pays for its own code only, not for the other functions'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import HTTPException

from orderpally import web
from orderpally.config import settings

if TYPE_CHECKING:
    from orderpally import events
    from orderpally.messaging.requests import SendEmail

settings()  # refuse to start on an unsafe configuration, before serving anything

# functions-framework offers its Flask app's error handlers while it loads this module.
functions_framework.errorhandler(HTTPException)(web.framework_error)


# --- HTTP functions: one router each, built on first use ------------------------------


# Each HTTP function's path_prefix, as infra/functions.yaml gives it (a unit test compares).
PATH_PREFIXES = {
    "health": "/health",
    "auth": "/auth",
    "account": "/account",
    "staff": "/staff",
    "incidents": "/incidents",
    "well_known": "/.well-known",
    "notices": "/notices",
}


def _router(function: str, *tables: Any) -> web.Router:
    """The function's routes: those of `tables` under its path prefix. Only the modules a
    function needs are imported, so the others stay off its cold start."""
    return web.Router.under(PATH_PREFIXES[function], *tables)


@functools.cache
def health_routes() -> web.Router:
    from orderpally import clients
    from orderpally.health import service as health_service

    def report(request: flask.Request) -> flask.Response:
        status, body = health_service.report(settings(), clients.firestore_client)
        return web.json_response(body, status)

    return _router("health", [web.Route("/health", ("GET",), report)])


@functools.cache
def auth_routes() -> web.Router:
    from orderpally.access.http import auth as auth_http
    from orderpally.access.http import facebook as facebook_http

    return _router("auth", auth_http.ROUTES, facebook_http.ROUTES)


@functools.cache
def account_routes() -> web.Router:
    from orderpally.access.http import account as account_http
    from orderpally.checkpoints import http as checkpoints_http
    from orderpally.lifecycle import http as lifecycle_http
    from orderpally.records import http as records_http
    from orderpally.trust import http as trust_http

    tables = (account_http, lifecycle_http, records_http, trust_http, checkpoints_http)
    return _router("account", *(module.ROUTES for module in tables))


@functools.cache
def staff_routes() -> web.Router:
    from orderpally.access.http import account as account_http
    from orderpally.incidents import http as incidents_http
    from orderpally.lifecycle import http as lifecycle_http
    from orderpally.notices import http as notices_http
    from orderpally.records import http as records_http
    from orderpally.trust import http as trust_http

    tables = (incidents_http, account_http, lifecycle_http, records_http, notices_http, trust_http)
    return _router("staff", *(module.ROUTES for module in tables))


@functools.cache
def incident_routes() -> web.Router:
    from orderpally.incidents import http as incidents_http

    return _router("incidents", incidents_http.ROUTES)


@functools.cache
def well_known_routes() -> web.Router:
    from orderpally.incidents import http as incidents_http

    return _router("well_known", incidents_http.ROUTES)


@functools.cache
def notice_routes() -> web.Router:
    from orderpally.checkpoints import http as checkpoints_http
    from orderpally.notices import http as notices_http

    return _router("notices", notices_http.ROUTES, checkpoints_http.ROUTES)


# Every HTTP function's router by name, for the contract and authorization tests.
ROUTERS: dict[str, Callable[[], web.Router]] = {
    "health": health_routes,
    "auth": auth_routes,
    "account": account_routes,
    "staff": staff_routes,
    "incidents": incident_routes,
    "well_known": well_known_routes,
    "notices": notice_routes,
}


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    return health_routes().dispatch(request)


@functions_framework.http
def auth(request: flask.Request) -> flask.Response:
    return auth_routes().dispatch(request)


@functions_framework.http
def account(request: flask.Request) -> flask.Response:
    return account_routes().dispatch(request)


@functions_framework.http
def staff(request: flask.Request) -> flask.Response:
    return staff_routes().dispatch(request)


@functions_framework.http
def incidents(request: flask.Request) -> flask.Response:
    return incident_routes().dispatch(request)


@functions_framework.http
def well_known(request: flask.Request) -> flask.Response:
    return well_known_routes().dispatch(request)


@functions_framework.http
def notices(request: flask.Request) -> flask.Response:
    return notice_routes().dispatch(request)


# --- Scheduled (HTTP, POST from Cloud Scheduler) and topic functions ------------------


def _handle(cloud_event: CloudEvent, spec: Any, handler: Callable[[Any, Any], object]) -> None:
    from orderpally import clients, events

    events.handle_event(clients.firestore_client(), cloud_event, spec, handler)


def _publisher() -> events.Publisher:
    """The `events.Publisher` this process's entry points hand their use cases (cheap: the
    Pub/Sub client is made on its first publish)."""
    from orderpally import clients, events

    return events.Publisher(clients.publisher)


def _send_email() -> SendEmail:
    """Mail requests published through `_publisher()`."""
    from orderpally.messaging.requests import sender

    return sender(_publisher())


@functools.cache
def _event_spec(function: str, message_type: str, payload: type, *, own_ledger: bool = True) -> Any:
    """How a topic function reads its events. A handler with `own_ledger` settles its work in
    state of its own, keyed by what it works on (a sequence number, a job's or a request's
    lease, a mail's delivery), not by the message: a redrive republishes under a new message
    id. That is its one ledger; the event ledger then only records the events it drops. The
    fault suite shows one effect under duplicate, concurrent and crashed deliveries of each."""
    from orderpally import events

    return events.EventSpec(function, message_type, payload, handler_is_idempotent=own_ledger)


@functions_framework.http
@web.endpoint
def emit_heartbeat(request: flask.Request) -> flask.Response:
    from orderpally.heartbeat import service as heartbeat

    web.require_method(request, "POST")
    beat = heartbeat.new_heartbeat(datetime.now(UTC))
    publisher = _publisher()
    message_id = publisher.publish(settings().heartbeat_topic, heartbeat.MESSAGE_TYPE, beat.model_dump(mode="json"))
    return web.json_response({"published": message_id}, 202)


@functions_framework.cloud_event
def record_heartbeat(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.heartbeat import service as heartbeat

    # The newest beat wins, whichever delivery brings it: a rule, not a ledger; the event ledger is its one.
    spec = _event_spec("record_heartbeat", heartbeat.MESSAGE_TYPE, heartbeat.Heartbeat, own_ledger=False)
    _handle(cloud_event, spec, lambda beat, ctx: heartbeat.record(clients.firestore_client(), beat, ctx.event_id))


@functions_framework.http
@web.endpoint
def snapshot_firestore(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.backups import exporters as backup_exporters
    from orderpally.backups import rules as backup_rules
    from orderpally.backups import service as backups

    web.require_method(request, "POST")
    now = datetime.now(UTC)
    scheduled = backup_rules.parse_schedule_time(request.headers.get("X-CloudScheduler-ScheduleTime"))
    slot = backup_rules.slot_for(scheduled, now)
    exporter = backup_exporters.exporter_for(settings(), clients.storage_client)
    record = backups.take_snapshot(clients.firestore_client(), exporter, slot, now)
    return web.json_response(record, 200 if record["duplicate"] else 201)


@functions_framework.http
@web.endpoint
def verify_snapshots(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.backups import exporters as backup_exporters
    from orderpally.backups import schedule_check as backup_schedule
    from orderpally.backups import service as backups

    web.require_method(request, "POST")
    cfg = settings()
    verdict = backups.verify_snapshots(
        clients.firestore_client(),
        backup_exporters.exporter_for(cfg, clients.storage_client),
        backup_schedule.snapshot_job_state(cfg.snapshot_scheduler_job, cfg.is_production),
        datetime.now(UTC),
        timedelta(hours=cfg.snapshot_max_age_hours),
    )
    return web.json_response(backups.verdict_body(verdict))


@functions_framework.cloud_event
def run_account_deletion(cloud_event: CloudEvent) -> None:
    from orderpally import clients, events
    from orderpally.lifecycle import data_map
    from orderpally.lifecycle import deletion as account_deletion

    spec = _event_spec("run_account_deletion", account_deletion.MESSAGE_TYPE, account_deletion.DeletionMessage)

    def run(message: account_deletion.DeletionMessage, _: events.EventContext) -> None:
        cfg = settings()
        db = clients.firestore_client()
        ports = account_deletion.Ports(
            db=db,
            storage=clients.storage_client(),
            buckets={"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket},
            pseudonym_key=cfg.pseudonym_key,
            continue_later=lambda account_id: _publisher().publish(
                account_deletion.TOPIC, account_deletion.MESSAGE_TYPE, {"account_id": account_id}
            ),
            # A crash point before each chunk commits, for the fault suite; a no-op in production.
            fault=lambda location_id: events.inject_fault(db, spec.function, f"before-commit:{location_id}"),
        )
        try:
            account_deletion.run_job(ports, data_map.load(), message.account_id)
        except account_deletion.JobBusy:
            raise events.RetryableError("deletion job is running elsewhere") from None

    _handle(cloud_event, spec, run)


@functions_framework.http
@web.endpoint
def purge_retained_records(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.lifecycle import data_map
    from orderpally.lifecycle import deletion as account_deletion

    web.require_method(request, "POST")
    cfg = settings()
    purged = account_deletion.purge_retained(
        clients.firestore_client(),
        data_map.load(),
        cfg.pseudonym_key,
        datetime.now(UTC).date(),
        storage=clients.storage_client(),
        buckets={"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket},
    )
    return web.json_response({"purged": purged})


@functions_framework.http
@web.endpoint
def execute_due_terminations(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.lifecycle import service as lifecycle

    web.require_method(request, "POST")
    effects = lifecycle.effects(clients.firestore_client(), clients.firebase_app(), _publisher())
    return web.json_response(lifecycle.execute_due(effects, datetime.now(UTC)))


@functions_framework.cloud_event
def record_billing_event(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.lifecycle import billing

    spec = _event_spec("record_billing_event", billing.MESSAGE_TYPE, billing.BillingEvent)
    _handle(cloud_event, spec, lambda event, _: billing.record_event(clients.firestore_client(), event))


@functions_framework.cloud_event
def build_content_export(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.lifecycle import data_map
    from orderpally.lifecycle import export as content_export

    def build(message: content_export.ExportMessage, _: Any) -> str:
        cfg = settings()
        buckets = {"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket}
        db, storage = clients.firestore_client(), clients.storage_client()
        send_email = _send_email()
        return content_export.build(db, storage, buckets, data_map.load(), message, send_email, datetime.now(UTC))

    spec = _event_spec(content_export.BUILD_FUNCTION, content_export.MESSAGE_TYPE, content_export.ExportMessage)
    _handle(cloud_event, spec, build)


@functions_framework.cloud_event
def send_notice_email(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.messaging import delivery as email_delivery
    from orderpally.messaging import requests as email_requests

    # One mail, or a batch of them (a notice's fan-out): the delivery ledger settles each by its key.
    spec = _event_spec("send_notice_email", email_requests.MESSAGE_TYPE, email_requests.MailRequest)
    _handle(
        cloud_event,
        spec,
        lambda mail, _: email_delivery.deliver_requested(
            clients.firestore_client(), mail.root, connect=clients.smtp_connection, mail_from=settings().mail_from
        ),
    )


@functions_framework.cloud_event
def fan_out_notice(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.notices import fanout as notice_fanout

    def fan_out(message: notice_fanout.FanoutMessage, _: Any) -> None:
        publisher = _publisher()
        ports = notice_fanout.Ports(
            db=clients.firestore_client(),
            publish_emails=functools.partial(notice_fanout.publish_emails, publisher),
            continue_later=functools.partial(notice_fanout.publish_job, publisher),
            notices_url=f"{settings().public_base_url}/notices/page",
        )
        notice_fanout.run(ports, message.job_id, lambda: datetime.now(UTC))

    spec = _event_spec("fan_out_notice", notice_fanout.MESSAGE_TYPE, notice_fanout.FanoutMessage)
    _handle(cloud_event, spec, fan_out)


@functions_framework.http
@web.endpoint
def release_notice_mailings(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.notices import fanout as notice_fanout

    web.require_method(request, "POST")
    publish_job = functools.partial(notice_fanout.publish_job, _publisher())
    released = notice_fanout.release_due(clients.firestore_client(), publish_job, datetime.now(UTC))
    return web.json_response({"released": released})


@functions_framework.http
@web.endpoint
def verify_audit_chains(request: flask.Request) -> flask.Response:
    from orderpally import audit, clients

    web.require_method(request, "POST")
    return web.json_response(audit.verify_recent(clients.firestore_client(), datetime.now(UTC)))


@functions_framework.http
@web.endpoint
def sequence_audit_trails(request: flask.Request) -> flask.Response:
    from orderpally import audit, clients

    web.require_method(request, "POST")
    return web.json_response({"chains": audit.link_stragglers(clients.firestore_client())})


@functions_framework.http
@web.endpoint
def publish_audit_checkpoint(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.checkpoints import service as checkpoints
    from orderpally.checkpoints.signing import configured_signer
    from orderpally.lifecycle import service as lifecycle

    web.require_method(request, "POST")
    db = clients.firestore_client()
    ports = checkpoints.Ports(
        db=db,
        signer=configured_signer(),
        origin=checkpoints.origin_of(settings().public_base_url),
        now=lambda: datetime.now(UTC),
        deletion_started=lambda chain_id: lifecycle.deletion_started(db, chain_id),
        deleted_since=lambda moment: lifecycle.deletion_certified_since(db, moment),
    )
    return web.json_response(checkpoints.publish(ports))


@functions_framework.http
@web.endpoint
def check_incident_deadlines(request: flask.Request) -> flask.Response:
    from orderpally import clients
    from orderpally.incidents import intake

    web.require_method(request, "POST")
    send_email = _send_email()
    return web.json_response(intake.check_deadlines(clients.firestore_client(), send_email, datetime.now(UTC)))


@functions_framework.cloud_event
def build_records(cloud_event: CloudEvent) -> None:
    from orderpally import clients
    from orderpally.records import service as records

    def build(message: records.RecordsMessage, _: Any) -> str:
        bucket = clients.storage_client().bucket(settings().exports_bucket)
        send_email = _send_email()
        return records.build(clients.firestore_client(), bucket, message, send_email, datetime.now(UTC))

    _handle(cloud_event, _event_spec(records.BUILD_FUNCTION, records.MESSAGE_TYPE, records.RecordsMessage), build)


@functions_framework.http
@web.endpoint
def redrive_archive_requests(request: flask.Request) -> flask.Response:
    from orderpally import clients, redrive

    web.require_method(request, "POST")
    publisher = _publisher()
    return web.json_response(redrive.redrive(clients.firestore_client(), publisher, datetime.now(UTC)))

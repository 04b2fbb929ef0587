"""Every entry point of the bundle. Each one decodes, delegates, responds.

The catalogue (infra/functions.yaml) names these functions; the rules live in
orderpally/<capability>/. Clients are created lazily in orderpally.clients.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import flask
import functions_framework
from cloudevents.http import CloudEvent

from orderpally import audit, clients, events, redrive, web
from orderpally.access import account_http as access_account_http
from orderpally.access import auth_http, facebook_http
from orderpally.backups import exporters as backup_exporters
from orderpally.backups import rules as backup_rules
from orderpally.backups import schedule_check as backup_schedule
from orderpally.backups import service as backups
from orderpally.config import settings
from orderpally.health import service as health_service
from orderpally.heartbeat import service as heartbeat
from orderpally.incidents import http as incidents_http
from orderpally.lifecycle import accounts_service as lifecycle
from orderpally.lifecycle import billing, data_map
from orderpally.lifecycle import deletion as account_deletion
from orderpally.lifecycle import export as content_export
from orderpally.lifecycle import http as lifecycle_http
from orderpally.messaging import delivery as email_delivery
from orderpally.messaging import requests as email_requests
from orderpally.notices import fanout as notice_fanout
from orderpally.notices import http as notices_http
from orderpally.records import http as records_http
from orderpally.records import service as records

settings()  # refuse to start on an unsafe configuration, before serving anything

# functions-framework offers its Flask app's error handlers while it loads this module.
if hasattr(functions_framework, "errorhandler"):
    from werkzeug.exceptions import HTTPException

    functions_framework.errorhandler(HTTPException)(web.framework_error)

DELETION_EVENTS = events.EventSpec(
    function="run_account_deletion",
    message_type=account_deletion.MESSAGE_TYPE,
    payload=account_deletion.DeletionMessage,
    lease_seconds=600,
)
BILLING_EVENTS = events.EventSpec(
    function="record_billing_event", message_type=billing.MESSAGE_TYPE, payload=billing.BillingEvent
)
EXPORT_EVENTS = events.EventSpec(
    function="build_content_export", message_type=content_export.MESSAGE_TYPE, payload=content_export.ExportMessage
)
EMAIL_EVENTS = events.EventSpec(
    function="send_notice_email", message_type=email_requests.MESSAGE_TYPE, payload=email_requests.EmailRequest
)
FANOUT_EVENTS = events.EventSpec(
    function="fan_out_notice",
    message_type=notice_fanout.MESSAGE_TYPE,
    payload=notice_fanout.FanoutMessage,
    lease_seconds=600,
)
RECORDS_EVENTS = events.EventSpec(
    function="build_records", message_type=records.MESSAGE_TYPE, payload=records.RecordsMessage
)
HEARTBEAT_EVENTS = events.EventSpec(
    function="record_heartbeat", message_type=heartbeat.MESSAGE_TYPE, payload=heartbeat.Heartbeat
)

health_routes = web.Router()
account_routes = web.Router()
staff_routes = web.Router()
notice_routes = web.Router()
auth_routes = web.Router()
incident_routes = web.Router()
well_known_routes = web.Router()
incidents_http.register(incident_routes, staff_routes, well_known_routes)
auth_http.register(auth_routes)
facebook_http.register(auth_routes)
access_account_http.register(account_routes, staff_routes)
lifecycle_http.register(account_routes, staff_routes)
records_http.register(account_routes, staff_routes)
notices_http.register(notice_routes, staff_routes)


@health_routes.route("/health", methods=["GET"])
def _health(request: flask.Request) -> flask.Response:
    status, body = health_service.report(settings())
    return web.json_response(body, status)


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    return health_routes.dispatch(request)


@functions_framework.http
def auth(request: flask.Request) -> flask.Response:
    return auth_routes.dispatch(request)


@functions_framework.http
def account(request: flask.Request) -> flask.Response:
    return account_routes.dispatch(request)


@functions_framework.http
def staff(request: flask.Request) -> flask.Response:
    return staff_routes.dispatch(request)


@functions_framework.http
def incidents(request: flask.Request) -> flask.Response:
    return incident_routes.dispatch(request)


@functions_framework.http
def well_known(request: flask.Request) -> flask.Response:
    return well_known_routes.dispatch(request)


@functions_framework.http
def notices(request: flask.Request) -> flask.Response:
    return notice_routes.dispatch(request)


@functions_framework.http
@web.endpoint
def emit_heartbeat(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    beat = heartbeat.new_heartbeat(datetime.now(UTC))
    message_id = events.publish(settings().heartbeat_topic, heartbeat.MESSAGE_TYPE, beat.model_dump(mode="json"))
    return web.json_response({"published": message_id}, 202)


@functions_framework.cloud_event
def record_heartbeat(cloud_event: CloudEvent) -> None:
    events.handle_event(
        cloud_event,
        HEARTBEAT_EVENTS,
        lambda beat, ctx: heartbeat.record(clients.firestore_client(), beat, ctx.event_id),
    )


@functions_framework.http
@web.endpoint
def snapshot_firestore(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    now = datetime.now(UTC)
    scheduled = backup_rules.parse_schedule_time(request.headers.get("X-CloudScheduler-ScheduleTime"))
    slot = backup_rules.slot_for(scheduled, now)
    record = backups.take_snapshot(clients.firestore_client(), backup_exporters.exporter_for(settings()), slot, now)
    return web.json_response(record, 200 if record["duplicate"] else 201)


@functions_framework.http
@web.endpoint
def verify_snapshots(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    cfg = settings()
    verdict = backups.verify_snapshots(
        clients.firestore_client(),
        backup_exporters.exporter_for(cfg),
        backup_schedule.snapshot_job_state(cfg.snapshot_scheduler_job, cfg.is_production),
        datetime.now(UTC),
        timedelta(hours=cfg.snapshot_max_age_hours),
    )
    return web.json_response(backups.verdict_body(verdict))


def _deletion_ports() -> account_deletion.Ports:
    cfg = settings()
    return account_deletion.Ports(
        db=clients.firestore_client(),
        storage=clients.storage_client(),
        buckets={"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket},
        pseudonym_key=cfg.pseudonym_key,
        continue_later=lambda account_id: events.publish(
            account_deletion.TOPIC, account_deletion.MESSAGE_TYPE, {"account_id": account_id}
        ),
        # A crash point before each chunk commits, for the fault suite; a no-op in production.
        fault=lambda location_id: events.inject_fault(DELETION_EVENTS.function, f"before-commit:{location_id}"),
    )


def _run_deletion(message: account_deletion.DeletionMessage, _: events.EventContext) -> None:
    try:
        account_deletion.run_job(_deletion_ports(), data_map.load(), message.account_id)
    except account_deletion.JobBusy:
        raise events.RetryableError("deletion job is running elsewhere") from None


@functions_framework.cloud_event
def run_account_deletion(cloud_event: CloudEvent) -> None:
    events.handle_event(cloud_event, DELETION_EVENTS, _run_deletion)


@functions_framework.http
@web.endpoint
def purge_retained_records(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    purged = account_deletion.purge_retained(
        clients.firestore_client(), data_map.load(), settings().pseudonym_key, datetime.now(UTC).date()
    )
    return web.json_response({"purged": purged})


@functions_framework.http
@web.endpoint
def execute_due_terminations(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    return web.json_response(lifecycle.execute_due(lifecycle_http.effects(), datetime.now(UTC)))


@functions_framework.cloud_event
def record_billing_event(cloud_event: CloudEvent) -> None:
    events.handle_event(
        cloud_event, BILLING_EVENTS, lambda event, _: billing.record_event(clients.firestore_client(), event)
    )


def _build_export(message: content_export.ExportMessage, _: events.EventContext) -> None:
    cfg = settings()
    outcome = content_export.run_export(
        clients.firestore_client(),
        clients.storage_client(),
        {"exports": cfg.exports_bucket, "attachments": cfg.attachments_bucket},
        data_map.load(),
        message,
        datetime.now(UTC),
    )
    if outcome == "ready":
        lifecycle_http.notify_export_ready(message.account_id, message.export_id)


@functions_framework.cloud_event
def build_content_export(cloud_event: CloudEvent) -> None:
    events.handle_event(cloud_event, EXPORT_EVENTS, _build_export)


@functions_framework.cloud_event
def send_notice_email(cloud_event: CloudEvent) -> None:
    events.handle_event(
        cloud_event,
        EMAIL_EVENTS,
        lambda request, _: email_delivery.deliver(
            clients.firestore_client(),
            request,
            send=email_delivery.smtp_sender(clients.smtp_connection),
            mail_from=settings().mail_from,
        ),
    )


def _publish_emails(requests: list[email_requests.EmailRequest]) -> None:
    # Publish the page at once, then wait: the cursor moves only when Pub/Sub holds every request.
    futures = [
        events.publish_async(email_requests.TOPIC, email_requests.MESSAGE_TYPE, r.model_dump(mode="json"))
        for r in requests
    ]
    for future in futures:
        future.result(timeout=60)


def _fan_out(message: notice_fanout.FanoutMessage, _: events.EventContext) -> None:
    ports = notice_fanout.Ports(
        db=clients.firestore_client(),
        publish_emails=_publish_emails,
        continue_later=notices_http.publish_fanout,
        notices_url=f"{settings().public_base_url}/notices/page",
    )
    notice_fanout.run(ports, message.job_id, lambda: datetime.now(UTC))


@functions_framework.cloud_event
def fan_out_notice(cloud_event: CloudEvent) -> None:
    events.handle_event(cloud_event, FANOUT_EVENTS, _fan_out)


@functions_framework.http
@web.endpoint
def release_notice_mailings(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    released = notice_fanout.release_due(clients.firestore_client(), notices_http.publish_fanout, datetime.now(UTC))
    return web.json_response({"released": released})


@functions_framework.http
@web.endpoint
def verify_audit_chains(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    return web.json_response(audit.verify_recent(datetime.now(UTC)))


@functions_framework.http
@web.endpoint
def check_incident_deadlines(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    return web.json_response(incidents_http.check_deadlines(datetime.now(UTC)))


@functions_framework.cloud_event
def build_records(cloud_event: CloudEvent) -> None:
    events.handle_event(cloud_event, RECORDS_EVENTS, lambda message, _: records_http.build(message))


@functions_framework.http
@web.endpoint
def redrive_archive_requests(request: flask.Request) -> flask.Response:
    web.require_method(request, "POST")
    return web.json_response(redrive.redrive(clients.firestore_client(), events.publish, datetime.now(UTC)))

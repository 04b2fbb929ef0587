"""Every entry point of the bundle. Each one decodes, delegates, responds.

The catalogue (infra/functions.yaml) names these functions; the rules live in
orderpally/<capability>/. Clients are created lazily in orderpally.clients.
"""

from __future__ import annotations

from datetime import UTC, datetime

import flask
import functions_framework
from cloudevents.http import CloudEvent

from orderpally import clients, events, web
from orderpally.config import settings
from orderpally.health import service as health_service
from orderpally.heartbeat import service as heartbeat

settings()  # refuse to start on an unsafe configuration, before serving anything

HEARTBEAT_EVENTS = events.EventSpec(
    function="record_heartbeat", message_type=heartbeat.MESSAGE_TYPE, payload=heartbeat.Heartbeat
)

health_routes = web.Router()


@health_routes.route("/health", methods=["GET"])
def _health(request: flask.Request) -> flask.Response:
    status, body = health_service.report(settings())
    return web.json_response(body, status)


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    return health_routes.dispatch(request)


@functions_framework.http
@web.endpoint
def emit_heartbeat(request: flask.Request) -> flask.Response:
    if request.method != "POST":
        raise web.Problem(405, "method-not-allowed", "Method not allowed", "Use POST.", headers={"Allow": "POST"})
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

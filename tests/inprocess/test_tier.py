"""The tier itself: each request runs with its own function's settings and clients, as in that
function's process, and the test around it keeps the tests' own."""

from __future__ import annotations

import flask

import iam_proxy
from orderpally import clients
from orderpally.config import settings


def what_the_process_sees() -> tuple[str, str, str]:
    cfg = settings()
    return (
        cfg.service_account_email,
        cfg.emulator_hosts["FIRESTORE_EMULATOR_HOST"],
        clients.firestore_client()._emulator_host,  # the client made from them, not an older one
    )


def test_each_request_runs_with_its_functions_own_settings_and_clients(stack_config, http_function):
    tests_own = what_the_process_sees()
    seen: list[tuple[str, str, str]] = []

    def record(sender: flask.Flask, **_: object) -> None:
        seen.append(what_the_process_sees())

    names = ["health", "incidents", "health", "firestore-snapshot"]
    for name in names:
        client = http_function(name)
        with flask.request_started.connected_to(record, client.application):
            client.get("/no-such-thing/at/all")
        assert what_the_process_sees() == tests_own

    assert seen == [
        (
            iam_proxy.service_account_email(name, stack_config.project_id),
            f"127.0.0.1:{stack_config.identity_port(name)}",
            f"127.0.0.1:{stack_config.identity_port(name)}",
        )
        for name in names
    ]
    assert tests_own[1] == f"127.0.0.1:{stack_config.identity_port()}"  # the owner's

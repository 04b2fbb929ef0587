"""The local gateway (the load balancer's stand-in) answers for what never reaches a function.

Its own process, routed to the running stack, with a short read timeout: a client that
stalls mid-body is answered 408, a function that does not answer is a 502, both problems.
And one routed to a function of the test's own, for Cloud Functions' 32 MiB limits.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gateway import MAX_BODY_BYTES

REPO = Path(__file__).resolve().parents[2]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_reply(client: socket.socket) -> bytes:
    """An HTTP answer with a JSON body, read off a raw socket until the body closes."""
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = client.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def own_gateway(routes: dict[str, str], *options: str) -> Iterator[str]:
    """A gateway of the test's own on a free port, with `routes`; yields its URL, then stops it."""
    port = unused_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "infra" / "local" / "gateway.py"),
            f"--port={port}",
            f"--routes={json.dumps(routes)}",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/nothing", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def gateway(running_stack):
    dead = unused_port()  # nothing listens here
    routes = {"/incidents": running_stack.url("incidents"), "/gone": f"http://127.0.0.1:{dead}"}
    yield from own_gateway(routes, "--read-timeout=2")


def test_a_body_shorter_than_its_length_is_answered_408_not_held_open(gateway):
    port = int(gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        client.sendall(
            b"POST /incidents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"short":'
        )
        started = time.monotonic()
        reply = read_reply(client)
    assert time.monotonic() - started < 10
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 408


def test_a_function_that_does_not_answer_is_a_502_problem(gateway):
    answer = requests.post(gateway + "/gone/anything", json={}, timeout=30)
    assert answer.status_code == 502
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["status"] == 502


def test_requests_that_arrive_whole_are_passed_on(gateway):
    answer = requests.post(gateway + "/incidents", data=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/problem+json"


# --- the size limits of Cloud Functions, which the gateway holds functions and clients to ----------


def upstream_app(environ: dict, start_response):
    """A function of the test's own: echoes what arrived, or answers `n` bytes, whole or streamed."""
    from werkzeug.wrappers import Request, Response

    request = Request(environ)
    if request.path == "/fn/echo":
        return Response(json.dumps({"received": len(request.get_data())}), mimetype="application/json")(
            environ, start_response
        )
    n = int(request.args["n"])
    if request.path == "/fn/stream":
        chunks = (b"s" * min(1 << 20, n - i) for i in range(0, n, 1 << 20))
        return Response(chunks, mimetype="application/octet-stream")(environ, start_response)  # chunked
    return Response(b"w" * n, mimetype="application/octet-stream")(environ, start_response)


@pytest.fixture(scope="module")
def limits_gateway():
    import threading

    from werkzeug.serving import make_server

    upstream = make_server("127.0.0.1", 0, upstream_app, threaded=True)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    yield from own_gateway({"/fn": f"http://127.0.0.1:{upstream.server_port}"})
    upstream.shutdown()


def test_a_request_up_to_32_mib_reaches_the_function(limits_gateway):
    answer = requests.post(limits_gateway + "/fn/echo", data=b"x" * MAX_BODY_BYTES, timeout=60)
    assert answer.status_code == 200
    assert answer.json() == {"received": MAX_BODY_BYTES}


def test_a_request_over_32_mib_is_a_413_problem_and_never_reaches_the_function(limits_gateway):
    port = int(limits_gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        # The length alone is refused, before a byte of the body is read.
        client.sendall(
            b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
            + b"x" * 1024
        )
        reply = read_reply(client)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/problem+json" in head
    assert json.loads(body) == {
        "type": "urn:orderpally:problem:request-too-large",
        "title": "The request body is larger than 32 MiB",
        "status": 413,
    }


def test_an_unstreamed_response_over_32_mib_is_a_500_problem_as_cloud_run_gives(limits_gateway):
    whole = requests.get(limits_gateway + f"/fn/whole?n={MAX_BODY_BYTES}", timeout=60)
    assert whole.status_code == 200
    assert len(whole.content) == MAX_BODY_BYTES
    too_large = requests.get(limits_gateway + f"/fn/whole?n={MAX_BODY_BYTES + 1}", timeout=60)
    assert too_large.status_code == 500
    assert too_large.headers["Content-Type"] == "application/problem+json"
    assert too_large.json()["type"] == "urn:orderpally:problem:response-too-large"


def test_a_streamed_response_is_not_held_to_the_limit(limits_gateway):
    streamed = requests.get(limits_gateway + f"/fn/stream?n={MAX_BODY_BYTES + 1}", timeout=60)
    assert streamed.status_code == 200
    assert len(streamed.content) == MAX_BODY_BYTES + 1


# --- client addresses, as the load balancer forwards them ---------------------------------------


def post_from(source: str, port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> int:
    """POST through the gateway from a loopback address of the test's choosing (all of
    127.0.0.0/8 reaches the gateway), so that callers can differ by address as in production."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        return connection.getresponse().status
    finally:
        connection.close()


def test_callers_are_told_apart_by_address_and_a_forged_forwarded_for_is_not_believed(running_stack):
    import random

    from orderpally import limiter
    from orderpally.incidents.http import ANONYMOUS_PER_ADDRESS

    port = running_stack.ports.gateway
    report = {"category": "other", "description": "a page that imitates our sign-in", "contact_email": "g@example.com"}
    first, second = (f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{n}" for n in (2, 3))
    for _ in range(limiter.configured(ANONYMOUS_PER_ADDRESS).max_attempts):
        assert post_from(first, port, "/incidents", report) == 201
    assert post_from(first, port, "/incidents", report) == 429
    # Claiming to be someone else does not buy a new allowance: the gateway appends the real
    # address, and the function reads the entry the load balancer wrote, not the client's.
    forged = {"X-Forwarded-For": f"203.0.113.{random.randint(1, 250)}"}
    assert post_from(first, port, "/incidents", report, forged) == 429
    # Another address has its own allowance.
    assert post_from(second, port, "/incidents", report) == 201

"""The local gateway (the load balancer's stand-in) answers for what never reaches a function.

Its own process, routed to the running stack, with a short read timeout: a client that
stalls mid-body is answered 408, a function that does not answer is a 502, both problems.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gateway(running_stack):
    dead = unused_port()  # nothing listens here
    routes = {"/incidents": running_stack.url("incidents"), "/gone": f"http://127.0.0.1:{dead}"}
    port = unused_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "infra" / "local" / "gateway.py"),
            f"--port={port}",
            f"--routes={json.dumps(routes)}",
            "--read-timeout=2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/health-of-nothing", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_a_body_shorter_than_its_length_is_answered_408_not_held_open(gateway):
    port = int(gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        client.sendall(
            b"POST /incidents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"short":'
        )
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = client.recv(4096)
            if not chunk:
                break
            reply += chunk
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

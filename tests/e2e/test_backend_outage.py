"""Firestore goes away under a running function: callers get a quick 503 problem, and service
returns when Firestore does. A dedicated emulator, so the rest of the suite is undisturbed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests

import local_stack

pytestmark = pytest.mark.usefixtures("running_stack")


def start_firestore(port: int, log: Path) -> local_stack.ManagedProcess:
    proc = local_stack.ManagedProcess(
        "firestore-outage",
        ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}", "--quiet"],
        log,
    )
    proc.start()
    local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{port}/"), proc)
    return proc


def report() -> dict:
    return {"category": "other", "description": "a page that imitates our sign-in", "contact_email": "o@example.com"}


def test_a_firestore_outage_is_a_quick_503_and_service_comes_back(running_stack, tmp_path):
    firestore_port = running_stack.ports.functions + 300
    function_port = running_stack.ports.functions + 301
    firestore = start_firestore(firestore_port, tmp_path / "firestore.log")
    env = {**running_stack.function_env, "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{firestore_port}"}
    function = local_stack.ManagedProcess(
        "incidents-outage",
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--source",
            str(local_stack.FUNCTIONS_DIR / "main.py"),
            "--target",
            "incidents",
            "--host",
            "127.0.0.1",
            "--port",
            str(function_port),
        ],
        tmp_path / "function.log",
        cwd=local_stack.FUNCTIONS_DIR,
        env=env,
    )
    function.start()
    url = f"http://127.0.0.1:{function_port}/incidents"
    try:
        local_stack.wait_until(local_stack.http_ready(url + "/policy"), function)
        assert requests.post(url, json=report(), timeout=60).status_code == 201

        firestore.stop()
        started = time.monotonic()
        down = requests.post(url, json=report(), timeout=60)
        assert down.status_code == 503
        assert down.headers["Content-Type"].startswith("application/problem+json")
        assert int(down.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 30  # bounded, not minutes

        firestore = start_firestore(firestore_port, tmp_path / "firestore-again.log")
        assert requests.post(url, json=report(), timeout=60).status_code == 201
    finally:
        function.stop()
        firestore.stop()

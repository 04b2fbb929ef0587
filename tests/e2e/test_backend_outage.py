"""Firestore goes away under a running function: callers get a quick 503 problem, service
returns when Firestore does, and what a cut left half-done is finished by the retry.
A dedicated emulator, so the rest of the suite is undisturbed."""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import local_stack
from orderpally import audit
from support.tcp_cut import CuttableLink
from support.waiting import mails_to, wait_for

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


def start_incidents(stack, port: int, firestore_host: str, log: Path, **extra_env: str) -> local_stack.ManagedProcess:
    env = {**stack.function_env, "FIRESTORE_EMULATOR_HOST": firestore_host, **extra_env}
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
            str(port),
        ],
        log,
        cwd=local_stack.FUNCTIONS_DIR,
        env=env,
    )
    function.start()
    local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{port}/incidents/policy"), function)
    return function


def test_a_firestore_outage_is_a_quick_503_and_service_comes_back(running_stack, tmp_path):
    firestore_port = running_stack.ports.functions + 300
    function_port = running_stack.ports.functions + 301
    firestore = start_firestore(firestore_port, tmp_path / "firestore.log")
    function = None
    url = f"http://127.0.0.1:{function_port}/incidents"
    try:
        function = start_incidents(running_stack, function_port, f"127.0.0.1:{firestore_port}", tmp_path / "f.log")
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
        if function:
            function.stop()
        firestore.stop()


def direct_client(port: int):
    """A Firestore client for the dedicated emulator (the library reads the host at construction)."""
    from google.cloud import firestore

    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    try:
        return firestore.Client(project=running_project())
    finally:
        if saved is not None:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved


def running_project() -> str:
    from orderpally.config import settings

    return settings().project_id


def test_cuts_in_the_middle_of_intakes_leave_nothing_half_done_once_retried(running_stack, tmp_path):
    firestore_port = running_stack.ports.functions + 302
    link_port = running_stack.ports.functions + 303
    function_port = running_stack.ports.functions + 304
    firestore = start_firestore(firestore_port, tmp_path / "firestore.log")
    link = CuttableLink(link_port, firestore_port)
    link.restore()
    function = None
    url = f"http://127.0.0.1:{function_port}/incidents"
    rng = random.Random(20261126)
    keys: dict[str, str] = {}  # Idempotency-Key -> contact address
    answers: dict[str, int] = {}

    def submit(key: str) -> tuple[str, int]:
        body = {**report(), "contact_email": keys[key]}
        answer = requests.post(url, json=body, headers={"Idempotency-Key": key}, timeout=60)
        if answer.status_code >= 300:
            assert answer.headers["Content-Type"].startswith("application/problem+json"), answer.text
        return key, answer.status_code

    try:
        function = start_incidents(
            running_stack,
            function_port,
            f"127.0.0.1:{link_port}",
            tmp_path / "function.log",
            INCIDENT_INTAKE_LEASE_SECONDS="2",
            RATE_LIMITS="incident-address=1000/3600",
        )
        for wave in range(6):
            batch = [f"cut-{wave}-{i}-{uuid.uuid4().hex[:8]}" for i in range(4)]
            keys.update({key: f"{key}@example.com" for key in batch})
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                pending = [pool.submit(submit, key) for key in batch]
                time.sleep(rng.uniform(0.0, 0.15))
                link.cut()
                time.sleep(1.0)
                link.restore()
                answers.update(f.result() for f in pending)
        # Every answer was a success or a problem asking for a retry, never a crash.
        assert set(answers.values()) <= {201, 503}, answers
        time.sleep(2.5)  # the crashed attempts' leases run out
        for key, status in answers.items():
            if status != 201:
                assert submit(key)[1] in (200, 201)

        db = direct_client(firestore_port)
        incidents = {snap.get("contact_email"): snap for snap in db.collection("incidents").stream()}
        assert sorted(incidents) == sorted(keys.values())  # one incident per key, none lost, none twice
        for contact, snap in incidents.items():
            assert snap.get("intake_pending") == [], contact
            # A history entry may still wait in the chain's pending list (a cut can strike while it is
            # linked): it is there, once, and the next reader links it.
            linked = snap.reference.collection("history").stream()
            waiting = db.collection(audit.CHAINS).document(f"incident-{snap.id}").collection(audit.PENDING).stream()
            history = [e.get("action") for e in [*linked, *waiting]]
            assert history.count("incident.received") == 1, contact
        for contact in keys.values():
            wait_for(lambda contact=contact: mails_to(running_stack.mailbox, contact))
        time.sleep(2.0)
        assert all(len(mails_to(running_stack.mailbox, contact)) == 1 for contact in keys.values())
    finally:
        if function:
            function.stop()
        link.cut()
        firestore.stop()

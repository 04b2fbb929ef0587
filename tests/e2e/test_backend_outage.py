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


def start_function(
    stack, target: str, port: int, ready_path: str, log: Path, **env_overrides: str
) -> local_stack.ManagedProcess:
    """One more process of an HTTP function, with its own view of the backing services."""
    function = local_stack.ManagedProcess(
        f"{target}-outage",
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--source",
            str(local_stack.FUNCTIONS_DIR / "main.py"),
            "--target",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
        cwd=local_stack.FUNCTIONS_DIR,
        env={**stack.function_env, **env_overrides},
    )
    function.start()
    local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{port}{ready_path}", any_status=True), function)
    return function


def start_cut_off(
    stack, tmp_path: Path, target: str, ready_path: str, variable: str, slot: int
) -> tuple[local_stack.ManagedProcess, str]:
    """One more process of `target` whose `variable` (an emulator host) names a port nothing
    listens on; returns it and its base URL. `slot` picks two ports of the functions' range."""
    port, dead = stack.ports.functions + slot, stack.ports.functions + slot + 1
    nowhere = f"http://127.0.0.1:{dead}" if variable == "STORAGE_EMULATOR_HOST" else f"127.0.0.1:{dead}"
    function = start_function(stack, target, port, ready_path, tmp_path / "function.log", **{variable: nowhere})
    return function, f"http://127.0.0.1:{port}"


def start_incidents(stack, port: int, firestore_host: str, log: Path, **extra_env: str) -> local_stack.ManagedProcess:
    """One more incidents function (an HTTP function, with the streamed-read deadline Terraform gives those)."""
    return start_function(
        stack,
        "incidents",
        port,
        "/incidents/policy",
        log,
        FIRESTORE_EMULATOR_HOST=firestore_host,
        FIRESTORE_STREAM_DEADLINE_SECONDS=local_stack.http_stream_deadline(stack.entry("incidents").timeout_seconds),
        **extra_env,
    )


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
        # An accepted report whose later steps a cut interrupted is finished by the deadline sweep.
        sweep = start_function(
            running_stack,
            "check_incident_deadlines",
            function_port + 20,
            "/",
            tmp_path / "sweep.log",
            FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{link_port}",
            INCIDENT_INTAKE_LEASE_SECONDS="2",
        )
        try:
            assert requests.post(f"http://127.0.0.1:{function_port + 20}/", timeout=120).status_code == 200
        finally:
            sweep.stop()

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


def test_with_pubsub_down_accepted_requests_are_kept_and_redriven_once_it_is_back(running_stack, tmp_path):
    """Pub/Sub unreachable from one account function: what it commits is answered as accepted,
    its audit entries are linked, and the archive-redrive schedule (which reaches Pub/Sub)
    publishes the build messages and the notice mail that could not go out."""
    from datetime import UTC, date, datetime, timedelta

    from orderpally import clients
    from orderpally.lifecycle import export
    from orderpally.messaging import requests as mail
    from orderpally.records import service as records
    from support.identities import browser_headers, create_customer

    function, base = start_cut_off(
        running_stack, tmp_path, "account", "/account/termination", "PUBSUB_EMULATOR_HOST", 305
    )
    customer = create_customer()
    headers = browser_headers(customer)
    try:
        started = time.monotonic()
        exported = requests.post(base + "/account/exports", headers=headers, timeout=60)
        wanted = {"from": "2026-01-01", "to": "2027-12-31"}
        asked = requests.post(base + "/account/records-requests", json=wanted, headers=headers, timeout=60)
        terminating = requests.post(
            base + "/account/termination",
            json={"termination_date": (date.today() + timedelta(days=3)).isoformat()},
            headers=headers,
            timeout=60,
        )
        assert [exported.status_code, asked.status_code, terminating.status_code] == [202, 202, 202], terminating.text
        assert time.monotonic() - started < 60  # each publish gives up in bounded time
    finally:
        function.stop()

    actions = [entry["action"] for entry in audit.entries(clients.firestore_client(), customer.uid)]
    assert {"export.requested", "records.requested", "termination.scheduled"} <= set(actions)
    assert mails_to(running_stack.mailbox, customer.email) == []

    db = clients.firestore_client()
    long_ago = datetime.now(UTC) - timedelta(minutes=20)
    export_ref = db.document(f"{export.EXPORTS}/{exported.json()['export_id']}")
    records_ref = db.document(f"{records.RECORDS}/{asked.json()['request_id']}")
    export_ref.update({"requested_at": long_ago})
    records_ref.update({"requested_at": long_ago})
    for staged in db.collection(mail.OUTBOX).stream():
        if staged.get("request")["account_id"] == customer.uid:
            staged.reference.update({"staged_at": long_ago})
    redriven = requests.post(running_stack.url("archive-redrive"), timeout=60).json()
    assert min(redriven[export.EXPORTS], redriven[records.RECORDS], redriven[mail.OUTBOX]) >= 1

    wait_for(lambda: export_ref.get().get("status") == "ready" and records_ref.get().get("status") == "ready")
    wait_for(lambda: len(mails_to(running_stack.mailbox, customer.email)) >= 3)
    time.sleep(2.0)
    subjects = sorted(str(m["Subject"]) for m in mails_to(running_stack.mailbox, customer.email))
    assert len(subjects) == 3, subjects  # export ready, records ready, termination scheduled: once each


def test_with_storage_down_an_upload_is_a_503_in_bounded_time_and_records_nothing(running_stack, tmp_path):
    from orderpally import clients
    from support.identities import browser_headers, create_customer

    function, url = start_cut_off(
        running_stack, tmp_path, "incidents", "/incidents/policy", "STORAGE_EMULATOR_HOST", 307
    )
    customer = create_customer()
    base = url + "/incidents"
    try:
        signed_in_report = {**report(), "contact_email": None}
        reported = requests.post(base, json=signed_in_report, headers=browser_headers(customer), timeout=60)
        assert reported.status_code == 201
        reference = reported.json()["reference"]
        started = time.monotonic()
        upload = requests.post(
            f"{base}/{reference}/attachments",
            data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
            headers={**browser_headers(customer), "Content-Type": "image/png"},
            timeout=120,
        )
        waited = time.monotonic() - started
    finally:
        function.stop()
    assert upload.status_code == 503
    assert upload.headers["Content-Type"].startswith("application/problem+json")
    assert waited < 45  # inside the function's timeout: the caller gets our problem, not the platform's 504
    incident = clients.firestore_client().document(f"incidents/{reference}").get().to_dict()
    assert not incident.get("attachments")


@pytest.mark.parametrize(
    ("target", "path"), [("account", "/account/termination"), ("auth", "/auth/session"), ("staff", "/staff/incidents")]
)
def test_with_firebase_auth_down_a_signed_in_request_is_a_503_problem(running_stack, tmp_path, target, path):
    from support.identities import browser_headers, create_customer

    function, base = start_cut_off(running_stack, tmp_path, target, "/", "FIREBASE_AUTH_EMULATOR_HOST", 309)
    customer = create_customer()  # made through the stack's own Auth emulator
    try:
        started = time.monotonic()
        answer = requests.get(base + path, headers=browser_headers(customer), timeout=60)
        waited = time.monotonic() - started
    finally:
        function.stop()
    assert answer.status_code == 503, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert int(answer.headers["Retry-After"]) > 0
    assert waited < 30


def test_with_pubsub_down_a_report_gets_its_reference_and_the_sweep_sends_its_acknowledgement(running_stack, tmp_path):
    from orderpally import clients

    function, base = start_cut_off(
        running_stack, tmp_path, "incidents", "/incidents/policy", "PUBSUB_EMULATOR_HOST", 311
    )
    contact = f"pubsub-down-{uuid.uuid4().hex[:8]}@example.com"
    try:
        answer = requests.post(base + "/incidents", json={**report(), "contact_email": contact}, timeout=60)
    finally:
        function.stop()
    assert answer.status_code == 201, answer.text
    reference = answer.json()["reference"]
    incident = clients.firestore_client().document(f"incidents/{reference}").get().to_dict()
    assert "acknowledgement" in incident["intake_pending"]
    assert mails_to(running_stack.mailbox, contact) == []

    assert requests.post(running_stack.url("incident-deadlines"), timeout=60).status_code == 200
    wait_for(lambda: mails_to(running_stack.mailbox, contact))
    time.sleep(2.0)
    (ack,) = mails_to(running_stack.mailbox, contact)
    assert reference in str(ack["Subject"])
    assert clients.firestore_client().document(f"incidents/{reference}").get().get("intake_pending") == []

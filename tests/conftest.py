"""Fixtures shared by the tiers.

unit         no fixtures from here: no I/O.
integration  `emulators`: real Firestore, Pub/Sub, Auth and Storage emulators
             plus the SMTP sink, started once per session (or reused when the
             environment names running emulators) and wiped before each test.
inprocess    `http_function`: one HTTP function of functions/main.py in this
             process (functions-framework's Flask app, its test client), with
             the environment the stack gives that function; `emulators` too
             when it needs the backends.
e2e          `running_stack`: the same, plus one functions-framework process
             per catalogue entry and the Pub/Sub push wiring, called over HTTP.

Tests use their own port range (the `make run` defaults + TEST_PORT_OFFSET,
10000 unless set) so they can run while a `make run` stack is up.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import local_stack
from support import frontend

EMULATOR_HOST_PORTS = {
    "FIRESTORE_EMULATOR_HOST": "firestore",
    "PUBSUB_EMULATOR_HOST": "pubsub",
    "FIREBASE_AUTH_EMULATOR_HOST": "auth",
    "STORAGE_EMULATOR_HOST": "storage",
}
REUSE_RUNNING = all(os.environ.get(v) for v in EMULATOR_HOST_PORTS)


TEST_PORT_OFFSET = int(os.environ.get("TEST_PORT_OFFSET", "10000"))


def _test_ports() -> local_stack.Ports:
    ports = local_stack.Ports.from_env(offset=TEST_PORT_OFFSET)
    if REUSE_RUNNING:
        named = {part: int(os.environ[var].rstrip("/").rsplit(":", 1)[1]) for var, part in EMULATOR_HOST_PORTS.items()}
        ports = dataclasses.replace(ports, **named)
    return ports


PORTS = _test_ports()
STATE_DIR = Path(os.environ.get("TEST_STATE_DIR", local_stack.REPO / ".local" / f"test-{TEST_PORT_OFFSET}"))
_stack = local_stack.LocalStack(PORTS, STATE_DIR)
_stack.extra_env["FAULT_POINTS"] = "on"  # the fault suite arms crash points in the stack's functions
_stack.extra_env["FRONTEND_ORIGINS"] = f"http://localhost:3000,{frontend.page_origin(PORTS.gateway)}"

# In-process code under test reads its configuration from the environment once,
# so point it at the test stack before anything imports it.
os.environ.update(_stack.function_env)
os.environ["ENVIRONMENT"] = "test"


INDEX_PROBE = "index_probe"


@pytest.fixture(scope="session", autouse=True)
def queries_have_their_indexes() -> Iterator[None]:
    """Fails the run if any query (of a function or in-process) needed an index firestore.tf lacks.

    The IAM proxy already answered each such query FAILED_PRECONDITION, as production would;
    this catches the ones whose error the code swallowed.
    """
    yield
    # test_firestore_index_enforcement.py provokes the refusal on purpose, on this collection only.
    violations = [v for v in _stack.index_violations() if not v["query"].startswith(f"collection {INDEX_PROBE} ")]
    if violations:
        listed = "\n".join(f"  {v['identity']}: {v['query']}\n    needs {v['missing']}" for v in violations)
        pytest.fail(f"queries production could not serve with terraform/firestore.tf's indexes:\n{listed}")


@pytest.fixture(scope="session")
def stack_config() -> local_stack.LocalStack:
    """The test stack as configured (ports, catalogue, environments), nothing started."""
    return _stack


@pytest.fixture(scope="session")
def emulator_stack() -> Iterator[local_stack.LocalStack]:
    missing = local_stack.check_prerequisites()
    if missing:
        pytest.fail("the emulators need: " + "; ".join(missing))
    try:
        _stack.start_emulators(reuse_running=REUSE_RUNNING)  # inside: a failed start stops what it started
        _stack.prepare_storage()
        yield _stack
    finally:
        _stack.stop()


@pytest.fixture
def emulators(emulator_stack: local_stack.LocalStack) -> local_stack.LocalStack:
    """The emulators, wiped clean for this test."""
    emulator_stack.reset()
    return emulator_stack


@pytest.fixture(scope="session")
def url_signer(emulator_stack: local_stack.LocalStack) -> Any:
    """The public key of the local IAM stand-in's signBlob, which checks the functions' signed URLs
    (an RSA public key), or None when the stack does not say it."""
    pem = getattr(emulator_stack, "signing_public_key_pem", None)
    return serialization.load_pem_public_key(pem()) if pem else None


@pytest.fixture(scope="session")
def functions_stack(emulator_stack: local_stack.LocalStack) -> Iterator[local_stack.LocalStack]:
    emulator_stack.start_functions()
    try:
        emulator_stack.wire_pubsub()
        yield emulator_stack
    finally:
        emulator_stack.stop_functions()


@pytest.fixture
def running_stack(functions_stack: local_stack.LocalStack) -> local_stack.LocalStack:
    """The whole local stack, wiped clean for this test."""
    functions_stack.reset()
    return functions_stack

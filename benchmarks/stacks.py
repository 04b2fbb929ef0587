"""What the benchmarks run on: the local stack, or a Firestore emulator alone.

A script started alone brings up its own and stops it afterwards. `run.py` starts one
local stack for several scripts and passes `--reuse-stack`, so each uses that stack
(a Firestore-only benchmark uses its Firestore emulator, in a project of its own)
instead of paying for a start-up of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import local_stack  # noqa: E402

DEFAULT_PORT_OFFSET = 12000  # below the ephemeral range (32768+), clear of the test stack's +10000
# The benchmarks call from one address many times over: every per-address limit they meet, lifted.
# One set for every script, so a stack started once serves them all.
RATE_LIMITS = "sign-in-address=100000/60,incident-address=100000/60,sign-up-address=100000/60,reset-address=100000/60"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET, help="the stack's ports: defaults + N")
    parser.add_argument(
        "--reuse-stack",
        action="store_true",
        help="a local stack with benchmarks/stacks.py's settings already runs at --port-offset (run.py starts one)",
    )


def new_stack(port_offset: int) -> local_stack.LocalStack:
    stack = local_stack.LocalStack(
        local_stack.Ports.from_env(offset=port_offset), ROOT / ".local" / f"bench-{port_offset}"
    )
    stack.extra_env = {"RATE_LIMITS": RATE_LIMITS}
    return stack


@contextlib.contextmanager
def running_stack(port_offset: int, reuse: bool) -> Iterator[local_stack.LocalStack]:
    """The whole local stack without its scheduler, emptied, with this process's clients pointed at it."""
    stack = new_stack(port_offset)
    os.environ.update(stack.function_env)
    if not reuse:
        stack.start(with_scheduler=False)
    try:
        stack.reset()
        yield stack
    finally:
        if not reuse:
            stack.stop()


@contextlib.contextmanager
def firestore_emulator(port_offset: int, reuse: bool, project: str) -> Iterator[str]:
    """A Firestore emulator's host:port, with `project` emptied there and this process's clients
    pointed at it directly (no IAM proxy: these benchmarks time Firestore and our code, nothing else)."""
    port = local_stack.Ports.from_env(offset=port_offset).firestore
    host = f"127.0.0.1:{port}"
    proc = None
    if not reuse:
        proc = local_stack.ManagedProcess(
            "firestore",
            ["gcloud", "emulators", "firestore", "start", f"--host-port={host}", "--quiet"],
            ROOT / ".local" / f"bench-{port_offset}-firestore" / "firestore.log",
        )
        proc.start()
    try:
        if proc is not None:
            local_stack.wait_until(local_stack.http_ready(f"http://{host}/"), proc)
        requests.delete(
            f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents", timeout=30
        ).raise_for_status()
        os.environ.update({"FIRESTORE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": project, "ENVIRONMENT": "local"})
        yield host
    finally:
        if proc is not None:
            proc.stop()

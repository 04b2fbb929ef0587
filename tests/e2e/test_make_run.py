"""`make run`'s program as a person uses it: start, curl what it prints, Ctrl-C, nothing left behind.

Runs on its own ports (the test stack's + 10000) beside the test stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

import local_stack

PORTS = local_stack.Ports.from_env({}, offset=int(os.environ.get("TEST_PORT_OFFSET", "10000")) + 10000)
SCRIPT = local_stack.REPO / "infra" / "local" / "local_stack.py"


def run_env(**overrides: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST") and not k.startswith("LOCAL_")}
    for name, port in dataclasses.asdict(dataclasses.replace(PORTS, **overrides)).items():
        env[f"LOCAL_{name.upper()}_PORT"] = str(port)
    return env


def all_ports() -> list[int]:
    catalogue_size = len(local_stack.load_catalogue())
    fixed = [v for k, v in dataclasses.asdict(PORTS).items() if k != "functions"]
    return fixed + [PORTS.functions + i for i in range(catalogue_size)]


def processes_mentioning(needles: list[str]) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # The Auth emulator's command line names no port: it runs in the state dir.
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if any(needle in cmdline or needle == cwd or cwd.startswith(needle + "/") for needle in needles):
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def start(tmp_path: Path, env: dict[str, str], ignore_sigint: bool = False) -> tuple[subprocess.Popen, list[str]]:
    # Its own session, so a failed test can kill the stack's whole group (see `reap`).
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--state-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As a `&` job of a non-interactive shell starts it: SIGINT ignored, inherited by exec.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def stack_needles(tmp_path: Path) -> list[str]:
    """What the command line of every process of a stack on PORTS in `tmp_path` mentions."""
    forms = [f"{form}{port}" for port in all_ports() for form in (":", "--port=", "--port ")]
    return [str(tmp_path), *forms]


def reap(proc: subprocess.Popen, tmp_path: Path) -> None:
    """Kills what a test's stack left: its own process group and each part's group.

    The parts run in groups of their own (so the stack can stop the emulators' Java
    children); after a failed test none of them may hold a port a later test needs.
    """
    groups = {proc.pid}
    for line in processes_mentioning(stack_needles(tmp_path)):
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(int(line.split(":", 1)[0])))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen, list[str]]]]:
    """Starts `make run`'s program; whatever the test's outcome, nothing of it outlives the test."""
    started: list[subprocess.Popen] = []

    def starter(env: dict[str, str], ignore_sigint: bool = False) -> tuple[subprocess.Popen, list[str]]:
        proc, lines = start(tmp_path, env, ignore_sigint)
        started.append(proc)
        return proc, lines

    yield starter
    for proc in started:
        reap(proc, tmp_path)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# Ctrl-C, to a stack whose parent started it with SIGINT ignored (as a `&` job is: the stack
# installs its own handler); or SIGTERM, which make (and a supervisor) may send twice.
@pytest.mark.parametrize(
    ("stop_signals", "ignore_sigint"),
    [([signal.SIGINT], True), ([signal.SIGTERM, signal.SIGTERM], False)],
    ids=["ctrl-c-with-sigint-ignored-by-the-parent", "sigterm"],
)
def test_run_prints_urls_that_answer_and_ctrl_c_stops_everything(tmp_path, stacks, stop_signals, ignore_sigint):
    proc, lines = stacks(run_env(), ignore_sigint=ignore_sigint)
    try:
        assert wait_for(lambda: any("Press Ctrl-C" in line for line in lines) or proc.poll() is not None, 180), lines
        assert proc.poll() is None, "\n".join(lines)
        output = "\n".join(lines)
        assert "Demo accounts" in output
        urls = re.findall(r"curl (http://127\.0\.0\.1:\d+/\S*)", output)
        assert urls, output
        for url in urls:
            assert requests.get(url, timeout=10).status_code == 200, url
        posts = re.findall(r"curl -X POST (http://127\.0\.0\.1:\d+/\S*)", output)
        for url in posts:
            assert requests.post(url, json={}, timeout=60).ok, url
    finally:
        for stop in stop_signals:
            proc.send_signal(stop)
            wait_for(lambda: any("Stopping" in line for line in lines), 5)
    code = proc.wait(timeout=60)
    assert code == 0, "\n".join(lines)
    assert "Stopped." in "\n".join(lines)
    assert processes_mentioning(stack_needles(tmp_path)) == []
    assert [p for p in all_ports() if not local_stack.port_is_free(p)] == []


def test_a_failed_test_leaves_no_part_of_its_stack_running(tmp_path):
    proc, lines = start(tmp_path, run_env())
    try:
        assert wait_for(lambda: any("Press Ctrl-C" in line for line in lines) or proc.poll() is not None, 180), lines
        assert processes_mentioning(stack_needles(tmp_path)), "the stack's parts should be running"
    finally:
        # What the fixture does after a failure: no signal the stack could handle, just the kill.
        reap(proc, tmp_path)
    assert wait_for(lambda: processes_mentioning(stack_needles(tmp_path)) == [], 10)
    taken = lambda: [p for p in all_ports() if not local_stack.port_is_free(p)]  # noqa: E731
    assert wait_for(lambda: taken() == [], 10), taken()


def test_a_taken_port_is_a_clear_error_and_leaves_nothing_running(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--state-dir", str(tmp_path)],
            env=run_env(smtp=taken),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    assert f"port {taken}" in proc.stderr
    assert "LOCAL_SMTP_PORT" in proc.stderr
    assert processes_mentioning([str(tmp_path)]) == []


@pytest.mark.parametrize("missing", ["java"])
def test_a_missing_prerequisite_is_named_with_how_to_install_it(tmp_path, missing):
    # A PATH without the tool: keep only the directories that do not provide it.
    import shutil

    keep = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / missing).exists()]
    env = {**run_env(), "PATH": os.pathsep.join(keep)}
    assert shutil.which(missing, path=env["PATH"]) is None
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Java" in proc.stderr
    assert "apt-get install" in proc.stderr

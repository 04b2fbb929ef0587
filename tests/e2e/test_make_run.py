"""`make run`'s program as a person uses it: start, curl what it prints, Ctrl-C, nothing left behind.

Runs on its own ports (the test stack's + 10000) beside the test stack.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
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
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def start(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--state-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# Ctrl-C; or SIGTERM, which make (and a supervisor) may send twice.
@pytest.mark.parametrize("stop_signals", [[signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]], ids=["ctrl-c", "sigterm"])
def test_run_prints_urls_that_answer_and_ctrl_c_stops_everything(tmp_path, stop_signals):
    proc, lines = start(tmp_path, run_env())
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
    needles = [str(tmp_path), f":{PORTS.firestore}", f":{PORTS.pubsub}", f"--port={PORTS.storage}"]
    needles += [f"--port {port}" for port in all_ports()]
    assert processes_mentioning(needles) == []
    assert [p for p in all_ports() if not local_stack.port_is_free(p)] == []


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

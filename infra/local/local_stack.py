"""The whole system on one machine: emulators, an SMTP sink, one functions-framework
process per catalogue entry, Pub/Sub push wiring and a cron scheduler.

`make run` runs this file; the test fixtures import it, so tests exercise the
same start-up a person gets. Every part is a process in its own process group,
so stopping it also stops the Java child that the `gcloud` emulator wrappers
start. Readiness is polled, never slept for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
import yaml

import facebook_standin
import iam_proxy
from smtp_sink import clear_mailbox

# The origins a frontend may call the local API from (CORS with credentials); FRONTEND_ORIGINS
# replaces them. One per host name a developer may use, since a page must call the API by the same.
DEFAULT_FRONTEND_ORIGINS = "http://localhost:3000,http://127.0.0.1:3000"

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "infra" / "functions.yaml"
FUNCTIONS_DIR = REPO / "functions"
FIREBASE_BIN = REPO / "infra" / "local" / "firebase" / "node_modules" / ".bin" / "firebase"
PROJECT_ID = "demo-orderpally"  # demo- projects never reach real Google services
READY_TIMEOUT = 120.0


class StackError(RuntimeError):
    """The stack cannot start; the message says why and what to do."""


# --- the catalogue -------------------------------------------------------------


@dataclass(frozen=True)
class FunctionEntry:
    name: str
    entry_point: str
    trigger: dict[str, Any]
    memory: str
    timeout_seconds: int
    max_instances: int
    secrets: tuple[str, ...]
    grants: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.trigger["kind"]

    @property
    def signature_type(self) -> str:
        return "cloudevent" if self.kind == "topic" else "http"


def load_catalogue(path: Path = CATALOGUE) -> list[FunctionEntry]:
    raw = yaml.safe_load(path.read_text())
    defaults = raw.get("defaults", {})
    entries = []
    for name, spec in raw["functions"].items():
        merged = {**defaults, **spec}
        entries.append(
            FunctionEntry(
                name=name,
                entry_point=merged["entry_point"],
                trigger=dict(merged["trigger"]),
                memory=str(merged["memory"]),
                timeout_seconds=int(merged["timeout_seconds"]),
                max_instances=int(merged["max_instances"]),
                secrets=tuple(merged.get("secrets") or ()),
                grants=tuple(merged.get("grants") or ()),
            )
        )
    return entries


# --- ports and configuration ------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    firestore: int = 8080
    pubsub: int = 8085
    auth: int = 9099
    storage: int = 9023
    smtp: int = 1025
    facebook: int = 9199  # the Facebook stand-in
    gateway: int = 8100  # the load balancer's stand-in: every HTTP function under one address
    functions: int = 8101  # the first function; the rest follow in catalogue order
    auth_hub: int = 4400  # firebase-tools' own coordination ports
    auth_logging: int = 4500
    iam_proxy: int = 8700  # the IAM proxy: this port for in-process code, then one per function

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, offset: int = 0) -> Ports:
        """Defaults (shifted by `offset`), overridden by LOCAL_<PART>_PORT variables."""
        env = dict(os.environ if env is None else env)
        values = {}
        for name, default in cls().__dict__.items():
            variable = f"LOCAL_{name.upper()}_PORT"
            raw = env.get(variable)
            if raw:
                if not raw.isdigit() or not 0 < int(raw) < 65536:
                    raise StackError(f"{variable} must be a port number, not {raw!r}")
                values[name] = int(raw)
            else:
                values[name] = default + offset
        return cls(**values)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str, variable: str) -> None:
    if not port_is_free(port):
        raise StackError(
            f"port {port} for {what} is already in use; stop whatever holds it "
            f"(is another `make run` still running?) or choose another port with {variable}=<port>"
        )


# --- prerequisites -------------------------------------------------------------------


def check_prerequisites() -> list[str]:
    """What is missing, each with how to install it; empty when all is there."""
    missing = []
    if not shutil.which("java"):
        missing.append("Java (the Firestore and Pub/Sub emulators run on it): apt-get install default-jre-headless")
    gcloud = shutil.which("gcloud")
    if not gcloud:
        missing.append("the Google Cloud SDK (gcloud): https://cloud.google.com/sdk/docs/install")
    else:
        platform = Path(os.path.realpath(gcloud)).parents[1] / "lib" / "google-cloud-sdk" / "platform"
        if not platform.exists():
            platform = Path(os.path.realpath(gcloud)).parents[1] / "platform"
        for component, package in (
            ("cloud-firestore-emulator", "google-cloud-cli-firestore-emulator"),
            ("pubsub-emulator", "google-cloud-cli-pubsub-emulator"),
        ):
            if not (platform / component).exists():
                missing.append(
                    f"the {component} of the Google Cloud SDK: apt-get install {package} "
                    f"(or gcloud components install {component.replace('cloud-', '')})"
                )
    if not shutil.which("node") or not shutil.which("npm"):
        missing.append("Node.js and npm (for firebase-tools' Auth emulator): apt-get install nodejs npm")
    if not FIREBASE_BIN.exists():
        missing.append("firebase-tools: run `make setup` (npm ci in infra/local/firebase)")
    return missing


# --- processes -------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new session makes the process a group leader: stopping the group
        # also stops the Java child of a `gcloud ... emulators start` wrapper.
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        stop_all([self], grace)


def stop_all(processes: list[ManagedProcess], grace: float = 10.0) -> None:
    """Stops every process at once: each group is asked to terminate, all share one grace
    period, and whatever is left of a group is then killed (a leader may be gone while a
    child lingers)."""
    leaders = [p.process for p in processes if p.process is not None]

    def signal_groups(sig: signal.Signals) -> None:
        for leader in leaders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, sig)

    def wait_for_leaders(until: float) -> None:
        for leader in leaders:
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(timeout=max(0.0, until - time.monotonic()))

    signal_groups(signal.SIGTERM)
    wait_for_leaders(time.monotonic() + grace)
    signal_groups(signal.SIGKILL)
    wait_for_leaders(time.monotonic() + grace)


def wait_until(ready: Callable[[], bool], proc: ManagedProcess, timeout: float = READY_TIMEOUT) -> None:
    """Polls `ready` until true; fails fast with the log's tail if the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc.alive():
            raise StackError(f"{proc.name} exited during start-up; its log ({proc.log_path}) ends:\n{proc.log_tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise StackError(
        f"{proc.name} was not ready after {timeout:.0f}s; its log ({proc.log_path}) ends:\n{proc.log_tail()}"
    )


def http_ready(url: str, any_status: bool = False) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            response = requests.get(url, timeout=1)
        except requests.RequestException:
            return False
        return any_status or response.ok

    return probe


def smtp_ready(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(3) == b"220"
        except OSError:
            return False

    return probe


# --- the stack -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionProcessInfo:
    entry: FunctionEntry
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push_endpoint(self, project_id: str) -> str:
        # The path makes functions-framework give the CloudEvent a realistic source.
        return f"{self.url}/projects/{project_id}/topics/{self.entry.trigger['topic']}"


class LocalStack:
    def __init__(self, ports: Ports, state_dir: Path, project_id: str = PROJECT_ID) -> None:
        self.ports = ports
        self.state_dir = state_dir
        self.project_id = project_id
        self.catalogue = load_catalogue()
        self.processes: list[ManagedProcess] = []
        self.functions = [FunctionProcessInfo(e, ports.functions + i) for i, e in enumerate(self.catalogue)]
        self._scheduler: CronScheduler | None = None
        self._function_processes: list[ManagedProcess] = []
        self.extra_env: dict[str, str] = {}  # e.g. benchmarks lifting rate limits
        self.iam_proxy_started = False

    # Environment that points Google clients and the functions at this stack.
    @property
    def emulator_env(self) -> dict[str, str]:
        return {
            "GOOGLE_CLOUD_PROJECT": self.project_id,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports.firestore}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports.pubsub}",
            "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{self.ports.auth}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.ports.storage}",
        }

    def identity_port(self, function_name: str | None = None) -> int:
        """The IAM proxy's port acting as a function's service account (None: the owner)."""
        if function_name is None:
            return self.ports.iam_proxy
        names = [info.entry.name for info in self.functions]
        return self.ports.iam_proxy + 1 + names.index(function_name)

    def identity_env(self, function_name: str) -> dict[str, str]:
        """Every Google endpoint of one function, through the IAM proxy as its own identity."""
        via = f"127.0.0.1:{self.identity_port(function_name)}"
        return {
            "FIRESTORE_EMULATOR_HOST": via,
            "PUBSUB_EMULATOR_HOST": via,
            "FIREBASE_AUTH_EMULATOR_HOST": via,
            "STORAGE_EMULATOR_HOST": f"http://{via}",
            "IAM_CREDENTIALS_BASE_URL": f"http://{via}",
            "CLOUDKMS_BASE_URL": f"http://{via}",
        }

    @property
    def function_env(self) -> dict[str, str]:
        owner = f"127.0.0.1:{self.identity_port()}"
        return {
            **self.emulator_env,
            # In-process code reaches Firestore through the proxy too, so its queries are
            # checked against the declared indexes; it signs as the owner, who may sign as anyone.
            "FIRESTORE_EMULATOR_HOST": owner,
            "IAM_CREDENTIALS_BASE_URL": f"http://{owner}",
            "CLOUDKMS_BASE_URL": f"http://{owner}",
            "ENVIRONMENT": "local",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
            "SMTP_SECURITY": "none",
            "SERVICE_VERSION": "local",
            "LOCAL_BACKUPS_DIR": str(self.state_dir / "backups"),
            # Cloud KMS has no emulator: the IAM proxy answers for the key Terraform makes (kms.tf).
            "CHECKPOINT_SIGNING_KEY": (
                f"projects/{self.project_id}/locations/asia-east1/keyRings/orderpally-data"
                "/cryptoKeys/orderpally-checkpoints/cryptoKeyVersions/1"
            ),
            "PYTHONUNBUFFERED": "1",
            # Facebook sign-in goes to the local stand-in (infra/local/facebook_standin.py).
            "FACEBOOK_APP_ID": facebook_standin.APP_ID,
            "FACEBOOK_APP_SECRET": facebook_standin.APP_SECRET,
            "FACEBOOK_DIALOG_URL": f"http://127.0.0.1:{self.ports.facebook}/dialog/oauth",
            "FACEBOOK_GRAPH_URL": f"http://127.0.0.1:{self.ports.facebook}",
            "FACEBOOK_TIMEOUT_SECONDS": "2",
            "FACEBOOK_REDIRECT_URI": self.gateway_url + "/auth/facebook/callback",
            "PUBLIC_BASE_URL": self.gateway_url,
            "FRONTEND_ORIGINS": ",".join(self.frontend_origins),
            **self.extra_env,
        }

    def process_env(self, entry: FunctionEntry) -> dict[str, str]:
        """What one function's process gets on top of the parent's environment: the stack's
        settings, what Cloud Run gives that function, and the endpoints of its own identity."""
        return {**self.function_env, **function_specific_env(entry), **self.identity_env(entry.name)}

    def entry(self, function_name: str) -> FunctionEntry:
        """The catalogue entry of a function."""
        for info in self.functions:
            if info.entry.name == function_name:
                return info.entry
        raise KeyError(function_name)

    @property
    def frontend_origins(self) -> list[str]:
        raw = self.extra_env.get("FRONTEND_ORIGINS") or os.environ.get("FRONTEND_ORIGINS") or DEFAULT_FRONTEND_ORIGINS
        return [origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip()]

    def frontend_pairings(self) -> list[tuple[str, str]]:
        """Each allowed frontend origin with the gateway address its pages must call: the same host
        name. The session cookie is SameSite=Lax, and localhost and 127.0.0.1 are different sites,
        so a page on one that calls the other signs in and is then refused (401) on every call."""
        pairs = []
        for origin in self.frontend_origins:
            host = origin.split("://", 1)[1].rsplit(":", 1)[0]
            if origin.startswith("http://") and host in ("localhost", "127.0.0.1"):
                pairs.append((origin, f"http://{host}:{self.ports.gateway}"))
        return pairs

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def url(self, function_name: str) -> str:
        """The local base URL of a catalogue function."""
        for info in self.functions:
            if info.entry.name == function_name:
                return info.url
        raise KeyError(function_name)

    @property
    def mailbox(self) -> Path:
        return self.state_dir / "mail"

    def _spawn(self, name: str, argv: list[str], **kwargs: Any) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.state_dir / "logs" / f"{name}.log", **kwargs)
        self.processes.append(proc)
        proc.start()
        return proc

    def _emulator_parts(self) -> list[tuple[str, list[str], Callable[[], bool], dict[str, Any]]]:
        """(name, argv, readiness probe, extra spawn arguments) of each emulator."""
        p = self.ports
        firebase_dir = self.state_dir / "firebase"
        firebase_dir.mkdir(parents=True, exist_ok=True)
        (firebase_dir / "firebase.json").write_text(
            json.dumps(
                {
                    "emulators": {
                        "auth": {"host": "127.0.0.1", "port": p.auth},
                        "hub": {"host": "127.0.0.1", "port": p.auth_hub},
                        "logging": {"host": "127.0.0.1", "port": p.auth_logging},
                        "ui": {"enabled": False},
                        "singleProjectMode": True,
                    }
                }
            )
        )
        firebase_env = {"NO_UPDATE_NOTIFIER": "1", "FIREBASE_CLI_DISABLE_UPDATE_CHECK": "true", "CI": "true"}
        return [
            (
                "firestore",
                ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{p.firestore}", "--quiet"],
                http_ready(f"http://127.0.0.1:{p.firestore}/"),
                {},
            ),
            (
                "pubsub",
                ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{p.pubsub}", "--quiet"],
                http_ready(f"http://127.0.0.1:{p.pubsub}/"),
                {},
            ),
            (
                "auth",
                [str(FIREBASE_BIN), "emulators:start", "--only", "auth", "--project", self.project_id],
                http_ready(f"http://127.0.0.1:{p.auth}/"),
                {"cwd": firebase_dir, "env": firebase_env},
            ),
            (
                "storage",
                [
                    sys.executable,
                    "-m",
                    "gcp_storage_emulator",
                    "start",
                    "--host=127.0.0.1",
                    f"--port={p.storage}",
                    "-M",
                ],
                http_ready(f"http://127.0.0.1:{p.storage}/"),
                {},
            ),
        ]

    def _smtp_part(self) -> tuple[str, list[str], Callable[[], bool], dict[str, Any]]:
        sink = str(REPO / "infra" / "local" / "smtp_sink.py")
        argv = [sys.executable, sink, f"--port={self.ports.smtp}", f"--mailbox={self.mailbox}"]
        return ("smtp", argv, smtp_ready(self.ports.smtp), {})

    def _facebook_part(self) -> tuple[str, list[str], Callable[[], bool], dict[str, Any]]:
        standin = str(REPO / "infra" / "local" / "facebook_standin.py")
        argv = [sys.executable, standin, f"--port={self.ports.facebook}"]
        return ("facebook", argv, http_ready(f"http://127.0.0.1:{self.ports.facebook}/me", any_status=True), {})

    def start_emulators(self, reuse_running: bool = False) -> None:
        """Starts the emulators, the SMTP sink and the Facebook stand-in; with `reuse_running`,
        only the sink and the stand-in."""
        p = self.ports
        needed = [
            (p.smtp, "the SMTP sink", "LOCAL_SMTP_PORT"),
            (p.facebook, "the Facebook stand-in", "LOCAL_FACEBOOK_PORT"),
        ]
        if not reuse_running:
            needed += [
                (p.firestore, "the Firestore emulator", "LOCAL_FIRESTORE_PORT"),
                (p.pubsub, "the Pub/Sub emulator", "LOCAL_PUBSUB_PORT"),
                (p.auth, "the Auth emulator", "LOCAL_AUTH_PORT"),
                (p.auth_hub, "the Firebase emulator hub", "LOCAL_AUTH_HUB_PORT"),
                (p.auth_logging, "the Firebase emulator log port", "LOCAL_AUTH_LOGGING_PORT"),
                (p.storage, "the Cloud Storage emulator", "LOCAL_STORAGE_PORT"),
            ]
        for port, what, variable in needed:
            require_free(port, what, variable)
        parts = [self._smtp_part(), self._facebook_part()] + ([] if reuse_running else self._emulator_parts())
        # Start all at once, then wait for each.
        started = [(self._spawn(name, argv, **extra), ready) for name, argv, ready, extra in parts]
        for proc, ready in started:
            wait_until(ready, proc)
        self.start_iam_proxy()

    @property
    def iam_dir(self) -> Path:
        return self.state_dir / "iam"

    def start_iam_proxy(self) -> None:
        """The IAM proxy (infra/local/iam_proxy.py): one port per identity in front of every emulator."""
        identities = [{"name": iam_proxy.OWNER, "email": f"owner@{self.project_id}.example", "grants": []}]
        identities += [
            {
                "name": info.entry.name,
                "email": iam_proxy.service_account_email(info.entry.name, self.project_id),
                "grants": list(info.entry.grants),
            }
            for info in self.functions
        ]
        for number, identity in enumerate(identities):
            identity["port"] = self.ports.iam_proxy + number
            require_free(identity["port"], f"the IAM proxy ({identity['name']})", "LOCAL_IAM_PROXY_PORT (a range)")
        host = self.emulator_env
        aliases = ("backups", "exports", "attachments")
        config = {
            "project_id": self.project_id,
            "state_dir": str(self.iam_dir),
            "terraform_dir": str(REPO / "terraform"),
            "upstreams": {
                "firestore": host["FIRESTORE_EMULATOR_HOST"],
                "pubsub": host["PUBSUB_EMULATOR_HOST"],
                "auth": host["FIREBASE_AUTH_EMULATOR_HOST"],
                "storage": host["STORAGE_EMULATOR_HOST"].removeprefix("http://").rstrip("/"),
            },
            "buckets": dict(zip(bucket_names(self.project_id), aliases, strict=True)),
            "identities": identities,
        }
        self.iam_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.iam_dir / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        proc = self._spawn(
            "iam-proxy", [sys.executable, str(REPO / "infra" / "local" / "iam_proxy.py"), f"--config={config_path}"]
        )
        last = f"http://127.0.0.1:{identities[-1]['port']}/"
        wait_until(http_ready(last), proc)
        self.iam_proxy_started = True

    def index_violations(self) -> list[dict[str, Any]]:
        """Queries this run issued that production's indexes could not serve (from the IAM proxy)."""
        path = self.iam_dir / "index-violations.jsonl"
        if not self.iam_proxy_started or not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def signing_public_key_pem(self) -> bytes:
        """The public half of the key the proxy's signBlob stand-in signs with (this run's)."""
        return (self.iam_dir / "signing-key.pub.pem").read_bytes()

    def reset(self) -> None:
        """Wipes all state through the emulators' reset endpoints (buckets and topics stay)."""
        host = self.emulator_env
        requests.delete(
            f"http://{host['FIRESTORE_EMULATOR_HOST']}/emulator/v1/projects/{self.project_id}"
            "/databases/(default)/documents",
            timeout=30,
        ).raise_for_status()
        requests.delete(
            f"http://{host['FIREBASE_AUTH_EMULATOR_HOST']}/emulator/v1/projects/{self.project_id}/accounts", timeout=30
        ).raise_for_status()
        requests.get(f"{host['STORAGE_EMULATOR_HOST']}/wipe?keep-buckets=1", timeout=30).raise_for_status()
        clear_mailbox(self.mailbox)
        shutil.rmtree(self.state_dir / "backups", ignore_errors=True)
        requests.put(f"http://127.0.0.1:{self.ports.facebook}/_standin/mode?mode=ok", timeout=10).raise_for_status()

    def start_functions(self) -> None:
        for info in self.functions:
            require_free(info.port, f"function {info.entry.name}", "LOCAL_FUNCTIONS_PORT (the first of a range)")
        started = []
        for info in self.functions:
            proc = self._spawn(
                f"fn-{info.entry.name}",
                [
                    str(Path(sys.executable).with_name("functions-framework")),
                    "--source",
                    str(FUNCTIONS_DIR / "main.py"),
                    "--target",
                    info.entry.entry_point,
                    "--signature-type",
                    info.entry.signature_type,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(info.port),
                ],
                cwd=FUNCTIONS_DIR,
                env=self.process_env(info.entry),
            )
            started.append((proc, http_ready(f"{info.url}/", any_status=True)))
        require_free(self.ports.gateway, "the gateway", "LOCAL_GATEWAY_PORT")
        routes = {info.entry.trigger["path_prefix"]: info.url for info in self.functions if info.entry.kind == "http"}
        gateway = self._spawn(
            "gateway",
            [
                sys.executable,
                str(REPO / "infra" / "local" / "gateway.py"),
                f"--port={self.ports.gateway}",
                "--routes",
                json.dumps(routes),
            ],
        )
        started.append((gateway, http_ready(f"{self.gateway_url}/health", any_status=True)))
        for proc, ready in started:
            wait_until(ready, proc)
        self._function_processes = [proc for proc, _ in started]

    def stop_functions(self) -> None:
        stop_all(self._function_processes)
        for proc in self._function_processes:
            self.processes.remove(proc)
        self._function_processes = []

    def wire_pubsub(self) -> None:
        """Creates every topic, its dead-letter topic, and push subscriptions to the functions."""
        with patched_env(self.emulator_env):
            wire_topics(self.project_id, self.functions)

    def prepare_storage(self) -> None:
        with patched_env(self.emulator_env):
            create_buckets(self.project_id)

    def start_scheduler(self) -> None:
        scheduled = [f for f in self.functions if f.entry.kind == "schedule"]
        self._scheduler = CronScheduler(scheduled, self.state_dir / "logs" / "scheduler.log")
        self._scheduler.start()

    def start(self, with_scheduler: bool = True) -> None:
        try:
            self.start_emulators()
            self.prepare_storage()
            self.start_functions()
            self.wire_pubsub()
            if with_scheduler:
                self.start_scheduler()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._scheduler:
            self._scheduler.stop()
        stop_all(self.processes)
        self.processes.clear()

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def table(self) -> str:
        rows = [
            ("Firestore emulator", f"127.0.0.1:{self.ports.firestore}", "FIRESTORE_EMULATOR_HOST"),
            ("Pub/Sub emulator", f"127.0.0.1:{self.ports.pubsub}", "PUBSUB_EMULATOR_HOST"),
            ("Auth emulator", f"127.0.0.1:{self.ports.auth}", "FIREBASE_AUTH_EMULATOR_HOST"),
            ("Storage emulator", f"http://127.0.0.1:{self.ports.storage}", "STORAGE_EMULATOR_HOST"),
            (
                "IAM proxy",
                f"127.0.0.1:{self.ports.iam_proxy}+",
                "each function reaches the emulators here as its own identity, with only its catalogue grants",
            ),
            ("SMTP sink", f"127.0.0.1:{self.ports.smtp}", f"mail saved in {display_path(self.mailbox)}"),
            (
                "Facebook stand-in",
                f"http://127.0.0.1:{self.ports.facebook}",
                f"sign in with Facebook at {self.gateway_url}/auth/facebook/start",
            ),
            ("gateway", self.gateway_url, "every HTTP route below under one address, as the load balancer serves it"),
            *(
                ("frontend", origin, f"a page here calls the API at {api} (the same host name, for its cookies)")
                for origin, api in self.frontend_pairings()
            ),
        ]
        for info in self.functions:
            trigger = info.entry.trigger
            if info.entry.kind == "http" and trigger.get("try_path"):
                what = f"curl {self.gateway_url}{trigger['try_path']}"
            elif info.entry.kind == "http":
                what = f"API under {trigger['path_prefix']}/ (see functions/openapi.yaml)"
            elif info.entry.kind == "topic":
                what = f"push subscription on topic {trigger['topic']}"
            else:
                what = f"scheduler: {trigger['cron']} ({trigger['time_zone']}); fire: curl -X POST {info.url}/"
            rows.append((f"fn {info.entry.name}", info.url, what))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{'part':<{width[0]}}  {'where':<{width[1]}}  notes", "-" * (sum(width) + 4 + 5)]
        lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
        return "\n".join(lines)


# As terraform/functions.tf sets it for HTTP functions: a streamed read stuck on a silent
# connection ends well inside the function's timeout (at most half of it), so the caller gets a 503.
HTTP_STREAM_DEADLINE_SECONDS = 20


def http_stream_deadline(timeout_seconds: int) -> str:
    return str(min(HTTP_STREAM_DEADLINE_SECONDS, timeout_seconds // 2))


def function_specific_env(entry: FunctionEntry) -> dict[str, str]:
    """What Cloud Run and the catalogue give one function, as Terraform sets it in production."""
    env = {"K_SERVICE": entry.name, "FUNCTION_TARGET": entry.entry_point}
    if entry.kind == "http":
        env["FIRESTORE_STREAM_DEADLINE_SECONDS"] = http_stream_deadline(entry.timeout_seconds)
    if "max_event_age_seconds" in entry.trigger:
        env["MAX_EVENT_AGE_SECONDS"] = str(entry.trigger["max_event_age_seconds"])
    return env


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def dead_letter_topic(topic: str) -> str:
    return f"{topic}-dead-letter"


def catalogue_topics(entries: list[FunctionEntry]) -> set[str]:
    """Topics functions subscribe to or are granted to publish to (as terraform/locals.tf computes them)."""
    topics = {e.trigger["topic"] for e in entries if e.kind == "topic"}
    topics |= {g.split(":")[1] for e in entries for g in e.grants if g.startswith("topic:")}
    return topics


def wire_topics(project_id: str, functions: list[FunctionProcessInfo]) -> None:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    for name in sorted(catalogue_topics([info.entry for info in functions])):
        with contextlib.suppress(exceptions.AlreadyExists):
            publisher.create_topic(name=publisher.topic_path(project_id, name))
    for info in functions:
        if info.entry.kind != "topic":
            continue
        topic = info.entry.trigger["topic"]
        for name in (topic, dead_letter_topic(topic)):
            with contextlib.suppress(exceptions.AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(project_id, name))
        with contextlib.suppress(exceptions.AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": subscriber.subscription_path(project_id, f"{dead_letter_topic(topic)}-inspect"),
                    "topic": publisher.topic_path(project_id, dead_letter_topic(topic)),
                }
            )
        subscription = subscriber.subscription_path(project_id, f"{info.entry.name}-push")
        with contextlib.suppress(exceptions.NotFound):
            subscriber.delete_subscription(subscription=subscription)  # a previous run's port may differ
        subscriber.create_subscription(
            request={
                "name": subscription,
                "topic": publisher.topic_path(project_id, topic),
                "push_config": {"push_endpoint": info.push_endpoint(project_id)},
                "ack_deadline_seconds": max(10, min(600, info.entry.timeout_seconds)),
                "dead_letter_policy": {
                    "dead_letter_topic": publisher.topic_path(project_id, dead_letter_topic(topic)),
                    "max_delivery_attempts": int(info.entry.trigger.get("max_delivery_attempts", 10)),
                },
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=1),
                    "maximum_backoff": duration_pb2.Duration(seconds=30),
                },
            }
        )


BUCKET_VARIABLES = ("BACKUPS_BUCKET", "EXPORTS_BUCKET", "ATTACHMENTS_BUCKET")


def bucket_names(project_id: str) -> list[str]:
    return [f"{project_id}-backups", f"{project_id}-exports", f"{project_id}-attachments"]


def create_buckets(project_id: str) -> None:
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=project_id, credentials=AnonymousCredentials())
    for name in bucket_names(project_id):
        with contextlib.suppress(exceptions.Conflict):
            client.create_bucket(name, location="asia-east1")


# --- the scheduler ----------------------------------------------------------------------------


class CronScheduler:
    """Fires scheduled functions on their catalogue cron, in the catalogue's time zone, like Cloud Scheduler."""

    def __init__(self, functions: list[FunctionProcessInfo], log_path: Path) -> None:
        self.functions = functions
        self.log_path = log_path
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for info in self.functions:
            thread = threading.Thread(target=self._run, args=(info,), name=f"cron-{info.entry.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _log(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"{datetime.now().isoformat()} {line}\n")

    def _run(self, info: FunctionProcessInfo) -> None:
        from croniter import croniter

        zone = ZoneInfo(info.entry.trigger["time_zone"])
        schedule = croniter(info.entry.trigger["cron"], datetime.now(zone))
        while not self._stop.is_set():
            due = schedule.get_next(datetime)
            if self._stop.wait(max(0.0, (due - datetime.now(zone)).total_seconds())):
                return
            try:
                # Cloud Scheduler names the slot it fires for; functions use it to stay idempotent.
                headers = {
                    "X-CloudScheduler": "true",
                    "X-CloudScheduler-ScheduleTime": due.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                }
                response = requests.post(f"{info.url}/", json={}, headers=headers, timeout=info.entry.timeout_seconds)
                self._log(f"{info.entry.name} fired for {due.isoformat()}: HTTP {response.status_code}")
            except requests.RequestException as exc:
                self._log(f"{info.entry.name} fired for {due.isoformat()}: {type(exc).__name__}")


# --- make run ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="Start the OrderPally local stack with demo data.")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".local", help="logs, mail and scratch files")
    parser.add_argument("--no-demo-data", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check prerequisites")
    args = parser.parse_args()

    missing = check_prerequisites()
    if missing:
        print("The local stack needs:\n" + "\n".join(f"  - {m}" for m in missing), file=sys.stderr)
        return 2
    if args.check:
        return 0

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM behaves like Ctrl-C: both unwind through the `finally` below. SIGINT's
    # handler is installed explicitly: Python leaves SIGINT ignored when the parent
    # started it so (a `&` job of a non-interactive shell, some supervisors).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        stack = LocalStack(Ports.from_env(), args.state_dir)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Starting the OrderPally local stack (logs in {display_path(args.state_dir / 'logs')}) ...", flush=True)
    code = 0
    try:
        stack.start()
        print()
        print(stack.table())
        if not args.no_demo_data:
            import demo_data

            with patched_env(stack.emulator_env):
                print()
                print(demo_data.load(stack.project_id))
        print("\nPress Ctrl-C to stop everything.", flush=True)
        while not (dead := stack.dead()):
            time.sleep(1.0)
        for proc in dead:
            print(f"error: {proc.name} stopped unexpectedly; its log ends:\n{proc.log_tail()}", file=sys.stderr)
        code = 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        print("\nStopping ...", flush=True)
        # A second Ctrl-C or SIGTERM (make forwards one) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("Stopped.", flush=True)
    return code


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

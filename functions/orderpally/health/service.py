"""Health: version, reachability of backing services, and pipeline liveness (clause 5.9)."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from orderpally.config import Settings
from orderpally.heartbeat import service as heartbeat


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def overall(checks: list[Check]) -> str:
    return "ok" if all(c.ok for c in checks) else "unavailable"


def _http_probe(name: str, url: str, timeout: float) -> Check:
    import requests

    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return Check(name, False, type(exc).__name__)
    return Check(name, response.status_code < 500, f"HTTP {response.status_code}")


def _smtp_probe(host: str, port: int, timeout: float) -> Check:
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as conn:
            code, _ = conn.noop()
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        return Check("smtp", False, type(exc).__name__)
    return Check("smtp", code == 250, f"SMTP {code}")


EMULATOR_NAMES = {
    "FIRESTORE_EMULATOR_HOST": "firestore",
    "PUBSUB_EMULATOR_HOST": "pubsub",
    "FIREBASE_AUTH_EMULATOR_HOST": "auth",
    "STORAGE_EMULATOR_HOST": "storage",
}


def local_checks(cfg: Settings, timeout: float = 2.0) -> list[Check]:
    """Reachability of each emulator and the SMTP sink of the local stack."""
    checks = []
    for variable, name in EMULATOR_NAMES.items():
        host = cfg.emulator_hosts.get(variable)
        if host:
            url = host if host.startswith("http") else f"http://{host}"
            checks.append(_http_probe(name, url.rstrip("/") + "/", timeout))
    checks.append(_smtp_probe(cfg.smtp_host, cfg.smtp_port, timeout))
    return checks


def report(
    cfg: Settings, firestore: Callable[[], Any], now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[int, dict]:
    """(HTTP status, body) of the health endpoint; `firestore` gives the client whose read it
    reports, and is called inside the check, since failing to make one is a failed read too."""
    checks = local_checks(cfg) if cfg.uses_emulators else []
    beat: dict | None = None
    try:
        beat = heartbeat.latest(firestore(), now())
        checks.append(Check("firestore-read", True))
    except Exception as exc:  # noqa: BLE001 - any failure here is what health reports
        checks.append(Check("firestore-read", False, type(exc).__name__))
    status = overall(checks)
    body = {
        "status": status,
        "version": cfg.version,
        "environment": cfg.environment,
        "checks": [asdict(c) for c in checks],
        "heartbeat": beat,
    }
    return (200 if status == "ok" else 503), body

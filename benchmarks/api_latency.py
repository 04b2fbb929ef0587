"""Cold start, sign-in and incident intake under load, each as a ratio against a reference from the same run.

Run with `make bench`; prints a table, asserts nothing.

- cold start: per HTTP function, process start to the first successful response, against a
  minimal functions-framework function that does one Firestore read with a bare client;
- sign-in: email sign-ins per second and p50/p99 through the function (server-side password
  check, session cookie, audit entry), against the same two calls made directly to the Auth
  emulator and firebase-admin;
- intake: 200 concurrent incident reports through the gateway: errors and p99, against 200
  concurrent GET /health through the same gateway.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import local_stack  # noqa: E402

PASSWORD = "benchmark passphrase that is long"  # noqa: S105  local emulator only


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def session_cookie(stack: local_stack.LocalStack, roles: list[str] | None = None) -> str:
    """A signed-in browser's session cookie, for a customer or (with roles) a staff member."""
    import uuid

    from firebase_admin import auth

    from orderpally import clients

    app = clients.firebase_app()
    email = f"cold-{uuid.uuid4().hex[:10]}@example.com"
    user = auth.create_user(email=email, password=PASSWORD, email_verified=True, app=app)
    if roles:
        auth.set_custom_user_claims(user.uid, {"roles": roles}, app=app)
    clients.firestore_client().document(f"accounts/{user.uid}").set(
        {"email": email, "status": "active", "kind": "store"}
    )
    signed_in = requests.post(
        f"http://127.0.0.1:{stack.ports.auth}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=bench",
        json={"email": email, "password": PASSWORD, "returnSecureToken": True},
        timeout=30,
    )
    return auth.create_session_cookie(signed_in.json()["idToken"], timedelta(hours=1), app=app)


def first_requests(stack: local_stack.LocalStack) -> dict[str, tuple[str, dict[str, str]]]:
    """Per HTTP function, a request that does its real work, Firestore reads included (not a 404)."""
    customer = {"Cookie": f"__Host-op_session={session_cookie(stack)}"}
    # Staff reads carry the CSRF token and a reason, as the staff frontend sends them.
    security = {
        "Cookie": f"__Host-op_session={session_cookie(stack, ['security'])}; __Host-op_csrf=cold",
        "X-CSRF-Token": "cold",
        "Origin": "http://localhost:3000",
    }
    browser = {
        "Cookie": customer["Cookie"] + "; __Host-op_csrf=cold",
        "X-CSRF-Token": "cold",
        "Origin": "http://localhost:3000",
    }
    report = {"category": "other", "description": "cold start probe report"}
    created = requests.post(stack.url("incidents") + "/incidents", json=report, headers=browser, timeout=60).json()
    return {
        "health": ("/health", {}),
        "auth": ("/auth/session", customer),
        "account": ("/account/api-keys", customer),
        "staff": ("/staff/incidents?reason=benchmark+read", security),
        "incidents": (f"/incidents/{created['reference']}", customer),
        "well_known": ("/.well-known/security.txt", {}),  # static by design: no read to make
        "notices": ("/notices/page", {}),
    }


def cold_start(
    stack: local_stack.LocalStack,
    source: Path,
    target: str,
    path: str,
    port: int,
    headers: dict[str, str] | None = None,
) -> float:
    env = {**os.environ, **stack.function_env}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--source",
            str(source),
            "--target",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=source.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}{path}", headers=headers or {}, timeout=10)
                if answer.status_code < 500:
                    assert answer.status_code < 400, (target, path, answer.status_code, answer.text[:200])
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 60:
                raise SystemExit(f"{target} did not start")
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cold_starts(stack: local_stack.LocalStack, rounds: int) -> list[tuple[str, float, float]]:
    port = stack.ports.functions + 200
    reference = statistics.median(
        cold_start(stack, ROOT / "benchmarks" / "reference" / "bare_function.py", "bare", "/", port)
        for _ in range(rounds)
    )
    rows = [("cold start: bare function + one read (reference)", reference, 1.0)]
    requests_for = first_requests(stack)
    for info in stack.functions:
        if info.entry.kind != "http":
            continue
        path, headers = requests_for[info.entry.entry_point]
        seconds = statistics.median(
            cold_start(stack, ROOT / "functions" / "main.py", info.entry.entry_point, path, port, headers)
            for _ in range(rounds)
        )
        rows.append((f"cold start: {info.entry.name} ({path})", seconds, seconds / reference))
    return rows


def sign_ins(stack: local_stack.LocalStack, users: int) -> list[tuple[str, float, float]]:
    from firebase_admin import auth

    from orderpally import clients

    app = clients.firebase_app()
    emails = []
    for i in range(users):
        email = f"bench-{i}@example.com"
        user = auth.create_user(email=email, password=PASSWORD, email_verified=True, app=app)
        clients.firestore_client().document(f"accounts/{user.uid}").set(
            {"email": email, "status": "active", "kind": "store"}
        )
        emails.append(email)

    def direct(email: str) -> float:
        started = time.perf_counter()
        response = requests.post(
            f"http://127.0.0.1:{stack.ports.auth}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=bench",
            json={"email": email, "password": PASSWORD, "returnSecureToken": True},
            timeout=30,
        )
        auth.create_session_cookie(response.json()["idToken"], timedelta(hours=1), app=app)
        return time.perf_counter() - started

    def through_function(email: str) -> float:
        started = time.perf_counter()
        response = requests.post(
            stack.gateway_url + "/auth/sign-in",
            json={"email": email, "password": PASSWORD},
            headers={"Origin": "http://localhost:3000"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    rows = []
    results = {}
    for label, call in (
        ("direct: Auth emulator + firebase-admin (floor)", direct),
        ("through POST /auth/sign-in", through_function),
    ):
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            latencies = list(pool.map(call, emails))
        results[label] = (len(emails) / (time.perf_counter() - started), latencies)
    floor_rate = results["direct: Auth emulator + firebase-admin (floor)"][0]
    floor_p50 = percentile(results["direct: Auth emulator + firebase-admin (floor)"][1], 50)
    for label, (rate, latencies) in results.items():
        rows.append((f"sign-in/s, {label}", rate, rate / floor_rate))
        rows.append((f"sign-in p50 s, {label}", percentile(latencies, 50), percentile(latencies, 50) / floor_p50))
        rows.append((f"sign-in p99 s, {label}", percentile(latencies, 99), percentile(latencies, 99) / floor_p50))
    return rows


def intake(stack: local_stack.LocalStack, reports: int) -> list[tuple[str, float, float]]:
    body = {
        "category": "other",
        "description": "benchmark report of a suspicious page",
        "contact_email": "bench@example.com",
        "language": "en",
    }

    def report(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = requests.post(stack.gateway_url + "/incidents", json=body, timeout=60)
        return response.status_code, time.perf_counter() - started

    def health(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = requests.get(stack.gateway_url + "/health", timeout=60)
        return response.status_code, time.perf_counter() - started

    rows = []
    reference_p99 = None
    for label, call in (("GET /health (reference)", health), ("POST /incidents", report)):
        with ThreadPoolExecutor(max_workers=reports) as pool:
            answers = list(pool.map(call, range(reports)))
        errors = sum(1 for status, _ in answers if status >= 300)
        p99 = percentile([seconds for _, seconds in answers], 99)
        reference_p99 = reference_p99 or p99
        rows.append((f"{reports} concurrent {label}: p99 s ({errors} errors)", p99, p99 / reference_p99))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port-offset", type=int, default=12000)  # below the ephemeral range (32768+)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--reports", type=int, default=200)
    args = parser.parse_args()

    stack = local_stack.LocalStack(local_stack.Ports.from_env(offset=args.port_offset), ROOT / ".local" / "bench-api")
    # The benchmark signs in and reports from one address: lift the per-address limits.
    stack.extra_env = {"RATE_LIMITS": "sign-in-address=100000/60,incident-address=100000/60"}
    os.environ.update(stack.function_env)
    stack.start(with_scheduler=False)
    try:
        stack.reset()
        rows = cold_starts(stack, args.rounds) + sign_ins(stack, args.users) + intake(stack, args.reports)
    finally:
        stack.stop()
    print(f"API latency on the local stack ({os.cpu_count()} cores)")
    print(f"{'measure':<72} {'value':>10} {'ratio':>8}")
    for label, value, ratio in rows:
        print(f"{label:<72} {value:>10.3f} {ratio:>7.2f}x")


if __name__ == "__main__":
    main()

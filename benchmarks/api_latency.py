"""Cold start, sign-in and incident intake under load, each as a ratio against a reference from the same run.

Run with `make bench` (or alone); prints its rows, asserts nothing.

- cold start: per HTTP function, process start to the first successful response, against a
  minimal functions-framework function that does one Firestore read with a bare client;
- sign-in: email sign-ins per second and p50/p99 through the function (server-side password
  check, session cookie, audit entry), against the same two calls made directly to the Auth
  emulator and firebase-admin: throughput, p50 against the direct p50, p99 against the direct p99;
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
import rows
import stacks
from stacks import ROOT, local_stack

BENCHMARK = "api_latency"
WARM_UP_SIGN_INS = 3  # each way, untimed
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


def cold_starts(stack: local_stack.LocalStack, rounds: int) -> list[rows.Row]:
    port = stack.ports.functions + 200
    reference = statistics.median(
        cold_start(stack, ROOT / "benchmarks" / "reference" / "bare_function.py", "bare", "/", port)
        for _ in range(rounds)
    )
    against = f"bare function + one Firestore read ({reference:.2f} s)"
    found = [
        rows.Row(BENCHMARK, f"cold start: bare function + one read, median of {rounds}", reference, "s", None, "-")
    ]
    requests_for = first_requests(stack)
    for info in stack.functions:
        if info.entry.kind != "http":
            continue
        path, headers = requests_for[info.entry.entry_point]
        seconds = statistics.median(
            cold_start(stack, ROOT / "functions" / "main.py", info.entry.entry_point, path, port, headers)
            for _ in range(rounds)
        )
        shown = "/incidents/{reference}" if info.entry.entry_point == "incidents" else path.split("?")[0]
        label = f"cold start: {info.entry.name} ({shown})"
        found.append(rows.Row(BENCHMARK, label, seconds, "s", seconds / reference, against))
    return found


def sign_ins(stack: local_stack.LocalStack, users: int) -> list[rows.Row]:
    from firebase_admin import auth

    from orderpally import clients

    app = clients.firebase_app()
    emails = []
    for i in range(users + WARM_UP_SIGN_INS):
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

    warm_up, emails = emails[:WARM_UP_SIGN_INS], emails[WARM_UP_SIGN_INS:]
    measured = {}
    for label, call in (("direct", direct), ("function", through_function)):
        for email in warm_up:  # the function's first call imports its capability: a cold start, timed above
            call(email)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            latencies = list(pool.map(call, emails))
        rate = len(emails) / (time.perf_counter() - started)
        measured[label] = (rate, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000)
    (direct_rate, direct_p50, direct_p99), (rate, p50, p99) = measured["direct"], measured["function"]
    floor = "signInWithPassword + create_session_cookie called directly"
    return [
        rows.Row(BENCHMARK, f"sign-in/s, direct calls, {users} users, 4 concurrent", direct_rate, "/s", None, "-"),
        rows.Row(BENCHMARK, "sign-in p50, direct calls", direct_p50, "ms", None, "-"),
        rows.Row(BENCHMARK, "sign-in p99, direct calls", direct_p99, "ms", None, "-"),
        rows.Row(
            BENCHMARK,
            "sign-in/s through POST /auth/sign-in",
            rate,
            "/s",
            rate / direct_rate,
            f"{floor} ({direct_rate:.0f}/s)",
        ),
        rows.Row(
            BENCHMARK,
            "sign-in p50 through the function",
            p50,
            "ms",
            p50 / direct_p50,
            f"direct p50 ({direct_p50:.1f} ms)",
        ),
        rows.Row(
            BENCHMARK,
            "sign-in p99 through the function",
            p99,
            "ms",
            p99 / direct_p99,
            f"direct p99 ({direct_p99:.1f} ms)",
        ),
        rows.Row(
            BENCHMARK,
            "sign-in p99 through the function, against the direct p50",
            p99,
            "ms",
            p99 / direct_p50,
            f"direct p50 ({direct_p50:.1f} ms), as earlier tables compared it",
        ),
    ]


def intake(stack: local_stack.LocalStack, reports: int) -> list[rows.Row]:
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

    measured = {}
    for label, call in (("health", health), ("incidents", report)):
        with ThreadPoolExecutor(max_workers=reports) as pool:
            answers = list(pool.map(call, range(reports)))
        errors = sum(1 for status, _ in answers if status >= 300)
        measured[label] = (percentile([seconds for _, seconds in answers], 99), errors)
    (health_p99, health_errors), (p99, errors) = measured["health"], measured["incidents"]
    return [
        rows.Row(
            BENCHMARK,
            f"{reports} concurrent GET /health through the gateway: p99 ({health_errors} errors)",
            health_p99,
            "s",
            None,
            "-",
        ),
        rows.Row(
            BENCHMARK,
            f"{reports} concurrent POST /incidents through the gateway: p99",
            p99,
            "s",
            p99 / health_p99,
            f"{reports} concurrent GET /health, same gateway (p99 {health_p99:.2f} s)",
        ),
        rows.Row(
            BENCHMARK, f"{reports} concurrent POST /incidents: answers that were errors", errors, "errors", None, "-"
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="cold starts per function, median taken (default 3; quick 1)")
    parser.add_argument("--users", type=int, help="sign-ins each way (default 100; quick 30)")
    parser.add_argument("--reports", type=int, help="concurrent incident reports (default 200; quick 50)")
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    users = args.users or (30 if args.quick else 100)
    reports = args.reports or (50 if args.quick else 200)
    with stacks.running_stack(args.port_offset, args.reuse_stack) as stack:
        measured = cold_starts(stack, rounds) + sign_ins(stack, users) + intake(stack, reports)
    rows.report(measured, args.rows)


if __name__ == "__main__":
    main()

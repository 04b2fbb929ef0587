"""Does answer time tell a registered address from an unregistered one? One ratio per endpoint.

Run with `make bench`; prints a table, asserts nothing.

For a failed sign-in, a sign-up and a password-reset request, the p50 answer time with
registered addresses against the p50 with unregistered ones, measured in the same run,
the two kinds interleaved one by one so drift in the emulators hits both alike. A ratio
near 1.00x means the time says nothing about whether the address is registered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import local_stack  # noqa: E402

PASSWORD = "benchmark passphrase that is long"  # noqa: S105  local emulator only
ORIGIN = {"Origin": "http://localhost:3000"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def registered(count: int) -> list[str]:
    from firebase_admin import auth

    from orderpally import clients

    emails = []
    for i in range(count):
        email = f"registered-{i}-{uuid.uuid4().hex[:6]}@example.com"
        user = auth.create_user(email=email, password=PASSWORD, app=clients.firebase_app())
        clients.firestore_client().document(f"accounts/{user.uid}").set(
            {"email": email, "status": "active", "kind": "store", "language": "en", "display_name": "Bench"}
        )
        emails.append(email)
    return emails


def timed(call: Callable[[str], requests.Response], email: str, expected: int) -> float:
    started = time.perf_counter()
    response = call(email)
    seconds = time.perf_counter() - started
    assert response.status_code == expected, (response.status_code, response.text[:200])
    return seconds


def compare(
    label: str, call: Callable[[str], requests.Response], expected: int, known: list[str], warmup: int = 5
) -> list[tuple[str, float, float]]:
    unknown = [f"nobody-{uuid.uuid4().hex[:10]}@example.com" for _ in known]
    for i in range(warmup):  # the first calls pay for imports and connections
        call(f"warmup-{i}-{uuid.uuid4().hex[:6]}@example.com")
    times: dict[str, list[float]] = {"registered": [], "unregistered": []}
    for mine, theirs in zip(known, unknown, strict=True):
        times["registered"].append(timed(call, mine, expected))
        times["unregistered"].append(timed(call, theirs, expected))
    p50_known, p50_unknown = percentile(times["registered"], 50), percentile(times["unregistered"], 50)
    return [
        (f"{label}: p50 s, unregistered addresses (reference)", p50_unknown, 1.0),
        (f"{label}: p50 s, registered addresses", p50_known, p50_known / p50_unknown),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port-offset", type=int, default=12000)  # below the ephemeral range (32768+)
    parser.add_argument("--addresses", type=int, default=60)
    args = parser.parse_args()

    stack = local_stack.LocalStack(
        local_stack.Ports.from_env(offset=args.port_offset), ROOT / ".local" / "bench-timing"
    )
    # Every call comes from one address and names each account once per endpoint: lift the limits.
    stack.extra_env = {
        "RATE_LIMITS": "sign-in-address=100000/60,sign-up-address=100000/60,reset-address=100000/60",
    }
    os.environ.update(stack.function_env)
    stack.start(with_scheduler=False)
    try:
        stack.reset()
        url = stack.gateway_url

        def sign_in(email: str) -> requests.Response:
            body = {"email": email, "password": "not the password, for sure"}
            return requests.post(url + "/auth/sign-in", json=body, headers=ORIGIN, timeout=30)

        def sign_up(email: str) -> requests.Response:
            body = {"email": email, "password": PASSWORD, "display_name": "Bench", "kind": "store", "language": "en"}
            return requests.post(url + "/auth/sign-up", json=body, headers=ORIGIN, timeout=30)

        def reset(email: str) -> requests.Response:
            return requests.post(url + "/auth/password-reset", json={"email": email}, headers=ORIGIN, timeout=30)

        # Fresh accounts per endpoint: a sign-up makes an unregistered address registered.
        rows = (
            compare("failed sign-in", sign_in, 401, registered(args.addresses))
            + compare("sign-up", sign_up, 202, registered(args.addresses))
            + compare("password reset", reset, 202, registered(args.addresses))
        )
    finally:
        stack.stop()
    print(f"Registered against unregistered addresses on the local stack ({os.cpu_count()} cores)")
    print(f"{'measure':<72} {'value':>10} {'ratio':>8}")
    for label, value, ratio in rows:
        print(f"{label:<72} {value:>10.3f} {ratio:>7.2f}x")


if __name__ == "__main__":
    main()

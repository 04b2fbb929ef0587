"""Does answer time tell a registered address from an unregistered one? Per endpoint, in milliseconds.

Run with `make bench` (or alone); prints its rows, asserts nothing.

For a failed sign-in, a sign-up and a password-reset request: the p50 answer time with
registered addresses against the p50 with unregistered ones, measured in the same run,
the two kinds interleaved one by one so drift in the emulators hits both alike. Reported
as a ratio (near 1.00x: the time says nothing) and as the p50 difference in milliseconds
(registered minus unregistered), beside two noise figures from the same samples: a 95%
bootstrap interval of that difference, and the p50 difference between the two halves of
the unregistered samples (alternate calls), which no address can explain. The target is
a difference under 5 ms, or one within the run's noise.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Callable

import requests
import rows
import stacks

BENCHMARK = "address_timing"
BOOTSTRAP_RESAMPLES = 2000
PASSWORD = "benchmark passphrase that is long"  # noqa: S105  local emulator only
ORIGIN = {"Origin": "http://localhost:3000"}


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


def bootstrap_interval(known: list[float], unknown: list[float], seed: int = 17) -> tuple[float, float]:
    """95% interval of median(known) - median(unknown), from resampling each with replacement."""
    pick = random.Random(seed)
    differences = sorted(
        statistics.median(pick.choices(known, k=len(known))) - statistics.median(pick.choices(unknown, k=len(unknown)))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return differences[int(0.025 * BOOTSTRAP_RESAMPLES)], differences[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]


def compare(
    label: str, call: Callable[[str], requests.Response], expected: int, known: list[str], warmup: int = 5
) -> list[rows.Row]:
    unknown = [f"nobody-{uuid.uuid4().hex[:10]}@example.com" for _ in known]
    for i in range(warmup):  # the first calls pay for imports and connections
        call(f"warmup-{i}-{uuid.uuid4().hex[:6]}@example.com")
    times: dict[str, list[float]] = {"registered": [], "unregistered": []}
    for mine, theirs in zip(known, unknown, strict=True):
        times["registered"].append(timed(call, mine, expected) * 1000)
        times["unregistered"].append(timed(call, theirs, expected) * 1000)
    registered, unregistered = times["registered"], times["unregistered"]
    p50_known, p50_unknown = statistics.median(registered), statistics.median(unregistered)
    low, high = bootstrap_interval(registered, unregistered)
    halves = statistics.median(unregistered[1::2]) - statistics.median(unregistered[0::2])
    n = len(known)
    return [
        rows.Row(BENCHMARK, f"{label}: p50, unregistered addresses ({n} each)", p50_unknown, "ms", None, "-"),
        rows.Row(
            BENCHMARK,
            f"{label}: p50, registered addresses",
            p50_known,
            "ms",
            p50_known / p50_unknown,
            "the same requests with unregistered addresses, interleaved",
        ),
        rows.Row(
            BENCHMARK,
            f"{label}: p50 registered minus unregistered",
            p50_known - p50_unknown,
            "ms",
            None,
            f"noise: 95% bootstrap interval [{low:+.1f}, {high:+.1f}] ms; target < 5 ms or within noise",
        ),
        rows.Row(
            BENCHMARK,
            f"{label}: noise, p50 of the unregistered samples' two halves, odd minus even",
            halves,
            "ms",
            None,
            "-",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, help="addresses of each kind per endpoint (default 60; quick 20)")
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    addresses = args.addresses or (20 if args.quick else 60)
    with stacks.running_stack(args.port_offset, args.reuse_stack) as stack:
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
        measured = (
            compare("failed sign-in", sign_in, 401, registered(addresses))
            + compare("sign-up", sign_up, 202, registered(addresses))
            + compare("password reset", reset, 202, registered(addresses))
        )
    rows.report(measured, args.rows)


if __name__ == "__main__":
    main()

"""What the code adds to each HTTP function's cold start: importing the bundle and building
the function's router, in a fresh interpreter, against a reference measured in the same run.

    python benchmarks/import_cost.py [--before REV] [--rounds N] [--quick] [--rows FILE]

The reference is a fresh interpreter importing functions-framework and the Firestore client
(what every function needs before any code of ours). With `--before`, the same figures for a
git revision (checked out in a temporary worktree) are measured interleaved with this tree's,
so a change's effect on cold start shows as an after/before ratio. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import rows

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = "import_cost"

ROUTERS = {
    "health": "health_routes",
    "auth": "auth_routes",
    "account": "account_routes",
    "staff": "staff_routes",
    "incidents": "incident_routes",
    "well_known": "well_known_routes",
    "notices": "notice_routes",
}

REFERENCE = "import functions_framework; from google.cloud import firestore"


def _timed(code: str, functions_dir: Path) -> float:
    """Seconds a fresh interpreter takes to run `code` (interpreter start-up excluded)."""
    probe = f"import time; _t = time.perf_counter()\n{code}\nprint(time.perf_counter() - _t)"
    env = {"ENVIRONMENT": "local", "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=functions_dir, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _function_code(router: str) -> str:
    return f"import main; main.{router}()"


def measure(trees: dict[str, Path], rounds: int) -> dict[tuple[str, str], float]:
    """Median seconds per (tree, function), with the trees and functions interleaved each round."""
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for tree, functions_dir in trees.items():
            samples.setdefault((tree, "reference"), []).append(_timed(REFERENCE, functions_dir))
            for name, router in ROUTERS.items():
                samples.setdefault((tree, name), []).append(_timed(_function_code(router), functions_dir))
    return {key: statistics.median(values) for key, values in samples.items()}


def report_rows(medians: dict[tuple[str, str], float], trees: list[str], rounds: int) -> list[rows.Row]:
    reference = medians[("after", "reference")]
    found = [
        rows.Row(
            BENCHMARK,
            f"fresh interpreter: functions-framework + Firestore client, median of {rounds}",
            reference,
            "s",
            None,
            "-",
        )
    ]
    for name in ROUTERS:
        seconds = medians[("after", name)]
        found.append(
            rows.Row(
                BENCHMARK,
                f"import + routing: {name}",
                seconds,
                "s",
                seconds / reference,
                f"fresh interpreter importing functions-framework + Firestore ({reference:.2f} s)",
            )
        )
        if "before" in trees:
            before = medians[("before", name)]
            found.append(
                rows.Row(
                    BENCHMARK,
                    f"import + routing: {name}, after / before",
                    seconds,
                    "s",
                    seconds / before,
                    f"the same at the --before revision ({before:.2f} s)",
                )
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare with this tree")
    parser.add_argument("--rounds", type=int, help="fresh interpreters per function (default 7; quick 3)")
    rows.add_arguments(parser)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"after": ROOT / "functions"}
        if args.before:
            worktree = Path(scratch) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=ROOT, check=True)
            trees = {"before": worktree / "functions", **trees}
        try:
            medians = measure(trees, rounds)
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
    rows.report(report_rows(medians, list(trees), rounds), args.rows)


if __name__ == "__main__":
    main()

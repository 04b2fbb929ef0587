"""What the code adds to each HTTP function's cold start: importing the bundle and building
the function's router, in a fresh interpreter, against a reference measured in the same run.

    python benchmarks/import_cost.py [--before REV] [--rounds N]

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare with this tree")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"after": ROOT / "functions"}
        if args.before:
            worktree = Path(scratch) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=ROOT, check=True)
            trees = {"before": worktree / "functions", **trees}
        try:
            started = time.perf_counter()
            medians = measure(trees, args.rounds)
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
    print(f"import + routing, median of {args.rounds} fresh interpreters ({time.perf_counter() - started:.0f} s)")
    header = "| function | " + " | ".join(f"{tree} s | {tree} / reference" for tree in trees)
    print(header + (" | after / before |" if args.before else " |"))
    print("|---" * (1 + 2 * len(trees) + (1 if args.before else 0)) + "|")
    for name in ("reference", *ROUTERS):
        cells = []
        for tree in trees:
            seconds = medians[(tree, name)]
            cells.append(f"{seconds:.3f} | {seconds / medians[(tree, 'reference')]:.2f}x")
        ratio = f" | {medians[('after', name)] / medians[('before', name)]:.2f}x" if args.before else ""
        print(f"| {name} | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()

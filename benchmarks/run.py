"""Runs every benchmark and prints their rows as one table, with the machine and the date.

    python benchmarks/run.py [--quick] [--port-offset N] [--only NAME ...]

`make bench` runs it; `make bench-quick` adds `--quick` (the same measures from smaller
runs). Each benchmark runs as its own subprocess with this Python, one after another
(they would skew one another's figures on a shared machine), and appends its rows to
a file this run reads back. The benchmarks that run on the local stack share one that
this script starts once. A benchmark that fails is
named under the table, with where its output is; the others still run. Nothing here
asserts a figure: every ratio is against a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import rows
import stacks

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    port_offset: bool = True  # takes --port-offset
    shared_stack: bool = False  # runs on the stack this script starts (--reuse-stack)


# In this order: the stack-free one first, then those sharing one stack.
BENCHMARKS = (
    Benchmark("import_cost", port_offset=False),
    Benchmark("deletion_throughput", shared_stack=True),
    Benchmark("audit_sequencer", shared_stack=True),
    Benchmark("checkpoint_cost", shared_stack=True),
    Benchmark("api_latency", shared_stack=True),
    Benchmark("address_timing", shared_stack=True),
    Benchmark("notice_fanout", shared_stack=True),
)


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        system = platform.freedesktop_os_release()["PRETTY_NAME"]
    except OSError:
        system = platform.platform()
    return (
        f"{os.cpu_count()} cores, {memory:.1f} GiB memory, {system} ({platform.system()} {platform.release()}),"
        f" Python {platform.python_version()}"
    )


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def table(found: list[rows.Row]) -> str:
    lines = ["| benchmark | measure | value | ratio | reference |", "|---|---|---|---|---|"]
    for row in found:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        cells = (row.benchmark, row.measure, f"{_number(row.value)} {row.unit}", ratio, row.reference)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def shared_stack(port_offset: int, needed: bool) -> Iterator[str | None]:
    """Starts the local stack the shared-stack benchmarks use; yields why it failed, if it did."""
    if not needed:
        yield None
        return
    stack = stacks.new_stack(port_offset)
    try:
        stack.start(with_scheduler=False)
    except (stacks.local_stack.StackError, OSError) as exc:
        yield f"the local stack did not start: {exc}"
        return
    try:
        yield None
    finally:
        # All at once: one after another, its thirty-odd processes take about ten seconds.
        with ThreadPoolExecutor(max_workers=len(stack.processes) or 1) as pool:
            list(pool.map(lambda process: process.stop(), stack.processes))
        stack.processes.clear()


def run_one(benchmark: Benchmark, args: argparse.Namespace, rows_file: Path, logs: Path) -> tuple[int, float]:
    """(exit code, seconds) of one benchmark; its output goes to its log."""
    argv = [sys.executable, str(HERE / f"{benchmark.name}.py"), "--rows", str(rows_file)]
    if args.quick:
        argv.append("--quick")
    if benchmark.port_offset:
        argv += ["--port-offset", str(args.port_offset)]
    if benchmark.shared_stack:
        argv.append("--reuse-stack")
    log = logs / f"{benchmark.name}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent, check=False).returncode
    return code, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (make bench-quick)")
    parser.add_argument("--port-offset", type=int, default=stacks.DEFAULT_PORT_OFFSET)
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHMARKS], help="run just these")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    logs = stacks.ROOT / ".local" / f"bench-{args.port_offset}" / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    started_at, started = datetime.now(UTC), time.perf_counter()
    timings: list[tuple[str, float]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        rows_file = Path(scratch) / "rows.jsonl"

        def run(benchmark: Benchmark, broken: str | None = None) -> None:
            print(f"{benchmark.name} ...", end=" ", flush=True)
            if broken:
                print("not run")
                failed.append(f"{benchmark.name}: {broken}")
                return
            code, seconds = run_one(benchmark, args, rows_file, logs)
            timings.append((benchmark.name, seconds))
            print(f"{seconds:.0f} s" + (f", failed (exit code {code})" if code else ""), flush=True)
            if code:
                log = logs / f"{benchmark.name}.log"
                failed.append(f"{benchmark.name}: exit code {code}; its output: {log.relative_to(stacks.ROOT)}")

        for benchmark in (b for b in chosen if not b.shared_stack and not b.port_offset):
            run(benchmark)
        on_stack = [b for b in chosen if b.shared_stack]
        stack_started = time.perf_counter()
        with shared_stack(args.port_offset, bool(on_stack)) as broken:
            if on_stack:
                timings.append(("(starting the shared local stack)", time.perf_counter() - stack_started))
            for benchmark in on_stack:
                run(benchmark, broken)
        for benchmark in (b for b in chosen if not b.shared_stack and b.port_offset):
            run(benchmark)
        found = rows.read(rows_file)
    total = time.perf_counter() - started
    print()
    print(f"## Benchmarks{' (quick)' if args.quick else ''}, {started_at:%Y-%m-%d %H:%M} UTC")
    print()
    print(f"Machine: {machine()}.")
    print()
    print(table(found))
    print()
    print("Run time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings) + f"; total {total:.0f} s.")
    for failure in failed:
        print(f"Did not finish: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

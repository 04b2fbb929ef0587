"""The rows every benchmark reports, so that `make bench` prints them as one table.

Each benchmark script takes `--rows FILE` (append its rows there as JSON lines) and
`--quick` (the same measures from smaller runs, for `make bench-quick`). A row is one
measure: its value, its unit, and its ratio against a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    benchmark: str  # the script's name, e.g. "notice_fanout"
    measure: str  # what was measured, e.g. "emails/s, 10,000 recipients until all are in the sink"
    value: float
    unit: str  # "s", "/s", "ms", "docs/s", ...
    ratio: float | None  # value / reference (None when the row is the reference itself, or has none)
    reference: str  # what the ratio is against, e.g. "plain smtplib loop (348 emails/s)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=Path, help="append the rows to this file as JSON lines")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for make bench-quick")


def report(rows: list[Row], to: Path | None) -> None:
    """Prints the rows; with `to`, also appends them there for the combined table."""
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        print(f"{row.measure:<78} {row.value:>12.3f} {row.unit:<7} {ratio:>8}  vs {row.reference}")
    if to is not None:
        with to.open("a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")


def read(path: Path) -> list[Row]:
    if not path.exists():
        return []
    return [Row(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

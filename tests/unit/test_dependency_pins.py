"""The locks pin every package exactly, and the tests run the versions the bundle deploys."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!-]+)$")


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{path.name}: not an exact pin: {line!r}"
        found[re.sub(r"[-_.]+", "-", match["name"]).lower()] = match["version"]
    return found


def top_level(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith(("#", "-r"))]
    return {re.sub(r"[-_.]+", "-", line.split("[")[0].split("==")[0]).lower(): line.split("==")[1] for line in lines}


def test_every_package_of_both_locks_is_pinned_exactly_and_the_tests_run_the_deployed_versions():
    runtime = pins(ROOT / "functions" / "requirements.txt")
    everything = pins(ROOT / "requirements.txt")
    assert runtime, "the runtime lock is empty"
    assert {name: everything.get(name) for name in runtime} == runtime


def test_the_locks_hold_the_top_level_pins():
    runtime = pins(ROOT / "functions" / "requirements.txt")
    everything = pins(ROOT / "requirements.txt")
    for name, version in top_level(ROOT / "functions" / "requirements.in").items():
        assert runtime.get(name) == version, name
    for name, version in top_level(ROOT / "requirements.in").items():
        assert everything.get(name) == version, name

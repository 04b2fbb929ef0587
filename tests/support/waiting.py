"""Waiting for what the stack does asynchronously (Pub/Sub pushes, mail), by polling."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from smtp_sink import read_mailbox

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2) -> T:
    """The first truthy value of `predicate`, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not reached in {timeout:.0f}s")


def mails_to(mailbox: Path, address: str) -> list:
    return [m for m in read_mailbox(mailbox) if str(m["To"]) == address]


def links_in(mail) -> list[str]:
    return re.findall(r"https?://\S+", mail.get_body(("plain",)).get_content())

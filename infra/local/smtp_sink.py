"""A local SMTP server that saves every message it receives as a .eml file.

The local stack's stand-in for the production mail relay: tests and people
read the mail that functions sent from the mailbox directory.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

# Recipients whose local part starts with these get the relay's refusal, so tests can
# see how the notice-email function handles a permanent and a temporary failure.
REFUSED_PREFIXES = {"bounce": "550 5.1.1 Mailbox does not exist", "defer": "451 4.3.0 Try again later"}


class MailboxHandler:
    def __init__(self, mailbox: Path) -> None:
        self.mailbox = mailbox
        mailbox.mkdir(parents=True, exist_ok=True)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        local_part = address.partition("@")[0].lower()
        for prefix, reply in REFUSED_PREFIXES.items():
            if local_part.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # Write then rename, so a reader never sees half a message.
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.mailbox / (name + ".part")
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self.mailbox / name)
        return "250 Message accepted for delivery"


def read_mailbox(mailbox: Path) -> list[EmailMessage]:
    """Every message received so far, oldest first."""
    if not mailbox.exists():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in sorted(mailbox.glob("*.eml"))
    ]


def clear_mailbox(mailbox: Path) -> None:
    for path in mailbox.glob("*.eml"):
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--mailbox", type=Path, required=True)
    args = parser.parse_args()
    controller = Controller(MailboxHandler(args.mailbox), hostname=args.host, port=args.port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(f"SMTP sink on {args.host}:{args.port}, saving to {args.mailbox}", flush=True)
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()

"""Notice fan-out: emails per second from one published notice, against a plain SMTP loop.

Run with `make bench`; prints a table, asserts nothing.

Starts the local stack on its own ports, creates N customers, publishes one
notice for all of them and times until the SMTP sink holds N mails: the
fan-out function pages through accounts and publishes one request each, the
notice-email function renders, claims the delivery ledger and sends. The
reference sends the same N rendered messages to the same sink in a plain
smtplib loop, one connection per message as the function does, in the same run.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import local_stack  # noqa: E402
from smtp_sink import clear_mailbox  # noqa: E402


def mail_count(mailbox: Path) -> int:
    return sum(1 for _ in mailbox.glob("*.eml"))


def seed_accounts(db, n: int) -> None:
    batch = db.batch()
    for i in range(n):
        batch.set(db.document(f"accounts/bench-{i:06d}"), {"email": f"c{i}@example.com", "status": "active"})
        if i % 500 == 499:
            batch.commit()
            batch = db.batch()
    batch.commit()


def plain_loop(stack: local_stack.LocalStack, n: int) -> float:
    from orderpally.messaging import delivery, rendering
    from orderpally.messaging.requests import EmailRequest

    data = {
        "notice_id": "bench",
        "kind": "service_change",
        "version": 1,
        "effective_date": "2027-01-01",
        "text": {"zh-TW": {"title": "基準", "body": "內容"}, "en": {"title": "Bench", "body": "Body"}},
        "correction_note": "",
        "notice_url": "http://localhost/notices/page",
    }
    rendered = rendering.render("service_notice", "zh-TW", data)
    messages = [
        delivery.compose(
            EmailRequest(idempotency_key=f"plain-{i}", template="service_notice", to_email=f"p{i}@example.com"),
            rendered,
            "OrderPally <no-reply@orderpally.local>",
            datetime.now(UTC),
        )
        for i in range(n)
    ]
    send = delivery.smtp_sender(lambda: smtplib.SMTP("127.0.0.1", stack.ports.smtp, timeout=20))
    started = time.perf_counter()
    for message in messages:
        send(message)
    return time.perf_counter() - started


def fan_out(stack: local_stack.LocalStack, n: int, timeout: float) -> float:
    from orderpally import clients
    from orderpally.notices import http as notices_http
    from orderpally.notices import rules, service

    db = clients.firestore_client()
    seed_accounts(db, n)
    now = datetime.now(UTC)
    draft = service.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {"zh-TW": {"title": "基準", "body": "內容"}, "en": {"title": "Bench", "body": "Body"}},
            "affects": {"all": True},
            "effective_date": rules.add_one_month(rules.taipei_date(now)).isoformat(),
        }
    )
    started = time.perf_counter()
    notice = service.create_notice(db, draft, "bench", now)
    notices_http.release_now(service.fanout_id(notice["id"], 1))
    while mail_count(stack.mailbox) < n:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {mail_count(stack.mailbox)} of {n} mails after {timeout:.0f}s")
        time.sleep(0.5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--port-offset", type=int, default=14000)  # below the ephemeral range (32768+)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    stack = local_stack.LocalStack(
        local_stack.Ports.from_env(offset=args.port_offset), ROOT / ".local" / "bench-fanout"
    )
    os.environ.update(stack.function_env)
    stack.start(with_scheduler=False)
    try:
        stack.reset()
        plain = plain_loop(stack, args.recipients)
        clear_mailbox(stack.mailbox)
        fanned = fan_out(stack, args.recipients, args.timeout)
    finally:
        stack.stop()
    reference = args.recipients / plain
    rate = args.recipients / fanned
    print(f"notice fan-out, {args.recipients} recipients, local stack")
    print(f"{'method':<40} {'emails/s':>10} {'ratio':>8}")
    print(f"{'plain smtplib loop (reference)':<40} {reference:>10.0f} {1:>7.2f}x")
    print(f"{'notice -> fan-out -> notice-email':<40} {rate:>10.0f} {rate / reference:>7.2f}x")


if __name__ == "__main__":
    main()

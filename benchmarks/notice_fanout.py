"""Notice fan-out: emails per second from one published notice, against a plain SMTP loop.

Run with `make bench`; prints its rows (benchmarks/rows.py), asserts nothing.

On the local stack (run.py's shared one, or its own when run alone), creates N customers, publishes one
notice for all of them and times until the SMTP sink holds N mails: the
fan-out function pages through the accounts and publishes each page's
customers as notice-email batches (100 recipients a message); the notice-email
function claims each batch's delivery ledger a chunk at a time in one
transaction, renders once per language, sends every mail of the batch over one
SMTP connection and settles the ledger in batched commits behind the sending.
Then it counts, from the mailbox, the customers mailed twice and those never
mailed. The reference sends the same N rendered messages to the same sink in a
plain smtplib loop, one connection per message, in the same run.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT / "infra" / "local")]

import rows  # noqa: E402
import stacks  # noqa: E402

import local_stack  # noqa: E402
from smtp_sink import clear_mailbox  # noqa: E402

BENCHMARK = "notice_fanout"
# After the last mail arrived, how long the mailbox must stay unchanged before it is counted:
# a duplicate would come from a redelivery, seconds later (Pub/Sub's backoff starts at 1 s).
QUIET_SECONDS = 5.0
QUICK_QUIET_SECONDS = 2.0


def mail_count(mailbox: Path) -> int:
    return sum(1 for _ in mailbox.glob("*.eml"))


def recipients_in(mailbox: Path) -> Counter[str]:
    parser = BytesHeaderParser()
    counts: Counter[str] = Counter()
    for path in mailbox.glob("*.eml"):
        with path.open("rb") as eml:
            counts[str(parser.parse(eml)["To"])] += 1
    return counts


def seed_accounts(db, n: int) -> list[str]:
    addresses = [f"c{i}@example.com" for i in range(n)]
    batch = db.batch()
    for i, address in enumerate(addresses):
        batch.set(db.document(f"accounts/bench-{i:06d}"), {"email": address, "status": "active"})
        if i % 500 == 499:
            batch.commit()
            batch = db.batch()
    batch.commit()
    return addresses


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
        send(delivery.Outgoing.of(message))  # serialised in the loop, as each mail always was
    return time.perf_counter() - started


def fan_out(stack: local_stack.LocalStack, n: int, timeout: float, quiet: float) -> tuple[float, int, int]:
    """Seconds until the sink holds n mails; then customers mailed more than once, and never."""
    from orderpally import clients
    from orderpally.notices import http as notices_http
    from orderpally.notices import rules, service

    db = clients.firestore_client()
    addresses = seed_accounts(db, n)
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
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    seen, quiet_since = mail_count(stack.mailbox), time.perf_counter()
    while time.perf_counter() - quiet_since < quiet:
        time.sleep(0.5)
        if mail_count(stack.mailbox) != seen:
            seen, quiet_since = mail_count(stack.mailbox), time.perf_counter()
    mailed = recipients_in(stack.mailbox)
    duplicates = sum(count - 1 for count in mailed.values())
    lost = sum(1 for address in addresses if address not in mailed)
    return elapsed, duplicates, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, help="customers to mail (10,000; --quick: 1,000)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    stacks.add_arguments(parser)
    rows.add_arguments(parser)
    args = parser.parse_args()
    n = args.recipients or (1_000 if args.quick else 10_000)

    with stacks.running_stack(args.port_offset, args.reuse_stack) as stack:
        plain = plain_loop(stack, n)
        clear_mailbox(stack.mailbox)
        fanned, duplicates, lost = fan_out(stack, n, args.timeout, QUICK_QUIET_SECONDS if args.quick else QUIET_SECONDS)
    reference = n / plain
    rate = (n - lost) / fanned
    against = f"plain smtplib loop ({reference:.0f} emails/s)"
    rows.report(
        [
            rows.Row(
                BENCHMARK, f"plain smtplib loop, one connection per mail, {n:,} mails", reference, "/s", None, "-"
            ),
            rows.Row(
                BENCHMARK,
                f"notice fan-out, {n:,} recipients until all are in the sink",
                rate,
                "/s",
                rate / reference,
                against,
            ),
            rows.Row(BENCHMARK, f"notice fan-out, {n:,} recipients: mailed twice", duplicates, "mails", None, "0"),
            rows.Row(BENCHMARK, f"notice fan-out, {n:,} recipients: never mailed", lost, "mails", None, "0"),
        ],
        args.rows,
    )


if __name__ == "__main__":
    main()

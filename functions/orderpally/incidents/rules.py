"""Security incident rules as plain data and functions: categories, states, severities, deadlines."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from orderpally import web

Category = Literal[
    "account_compromise",
    "suspected_data_leak",
    "vulnerability",
    "phishing_or_impersonation",
    "live_stream_abuse",
    "other",
]
Severity = Literal["critical", "high", "medium", "low"]
State = Literal["received", "triaged", "investigating", "resolved", "not_an_issue"]
CATEGORIES: tuple[str, ...] = get_args(Category)
# Reports in these categories page the security on-call as soon as they are confirmed.
CRITICAL_CATEGORIES = frozenset({"account_compromise", "suspected_data_leak"})
# What intake does once a report is stored, in order (each marked done as it is).
INTAKE_STEPS = ("history", "acknowledgement", "customer_trail", "page")


def intake_steps(category: str, confirmed: bool, reporter_has_account: bool) -> list[str]:
    """The steps a new report's intake queues: one with nothing to do is left out, so that
    it costs no write to mark done (an unconfirmed report is paged when it is confirmed)."""
    wanted = {
        "history": True,
        "acknowledgement": True,
        "customer_trail": reporter_has_account,
        "page": category in CRITICAL_CATEGORIES and confirmed,
    }
    return [step for step in INTAKE_STEPS if wanted[step]]


SEVERITIES: tuple[str, ...] = get_args(Severity)
STATES: tuple[str, ...] = get_args(State)
OPEN_STATES = ("received", "triaged", "investigating")
TRANSITIONS = {
    "received": {"triaged", "not_an_issue"},
    "triaged": {"investigating", "resolved", "not_an_issue"},
    "investigating": {"resolved", "not_an_issue"},
    "resolved": set(),
    "not_an_issue": set(),
}
# First response and resolution, per severity: defaults, overridable by configuration.
DEFAULT_DEADLINES = {
    "critical": (timedelta(hours=1), timedelta(hours=24)),
    "high": (timedelta(hours=4), timedelta(hours=72)),
    "medium": (timedelta(hours=24), timedelta(days=7)),
    "low": (timedelta(hours=72), timedelta(days=30)),
}
# Crockford's base32: no I, L, O, U to misread over the phone.
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE = re.compile(r"^OPI-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
# Only what a browser would parse as a tag: "a < b" is prose, "<b" and "</b" and "<!--" are not.
_MARKUP = re.compile(r"</?[A-Za-z!?]")


def new_reference() -> str:
    """60 random bits: unguessable, and short enough to read out."""
    chars = "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(12))
    return f"OPI-{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def provisional_severity(category: str) -> str:
    return "critical" if category in CRITICAL_CATEGORIES else "medium"


def has_markup(text: str) -> bool:
    return bool(_MARKUP.search(text))


def parse_deadlines(raw: str) -> dict[str, tuple[timedelta, timedelta]]:
    """`critical=1/24,high=4/72,...` (hours to first response / to resolution) over the defaults."""
    table = dict(DEFAULT_DEADLINES)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, hours = part.partition("=")
        first, _, resolve = hours.partition("/")
        if name not in SEVERITIES or not first.isdigit() or not resolve.isdigit() or int(first) > int(resolve):
            raise ValueError(f"INCIDENT_DEADLINES: bad entry {part!r}")
        table[name] = (timedelta(hours=int(first)), timedelta(hours=int(resolve)))
    return table


def deadlines(
    severity: str, received_at: datetime, table: dict[str, tuple[timedelta, timedelta]]
) -> tuple[datetime, datetime]:
    first, resolve = table[severity]
    return received_at + first, received_at + resolve


def check_transition(current: str, target: str) -> None:
    """Refuses (409) a move the incident's state does not allow."""
    if target != current and target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: the incident is closed"
        detail = f"cannot move from {current} to {target}; allowed: {allowed}"
        raise web.Problem(409, "incident-transition", "Not possible now", detail)


@dataclass(frozen=True)
class DeadlineAlert:
    deadline: str  # first_response | resolution
    kind: str  # due_soon | overdue


def due_alerts(incident: dict, now: datetime, warn_before: timedelta) -> list[DeadlineAlert]:
    """Which deadlines of an open incident are near or past."""
    if incident.get("state") not in OPEN_STATES:
        return []
    alerts = []
    checks = (
        ("first_response", incident.get("first_response_due"), incident.get("first_responded_at")),
        ("resolution", incident.get("resolution_due"), None),
    )
    for name, due, met in checks:
        if due is None or met is not None:
            continue
        if now >= due:
            alerts.append(DeadlineAlert(name, "overdue"))
        elif now >= due - warn_before:
            alerts.append(DeadlineAlert(name, "due_soon"))
    return alerts


# Attachments: what a reporter may send, recognised by content, not by the name they give.
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_ATTACHMENTS = 5
ATTACHMENT_TYPES = {"image/png": "png", "image/jpeg": "jpg", "application/pdf": "pdf", "text/plain": "txt"}


def attachment_matches(content_type: str, payload: bytes) -> bool:
    """Whether the bytes are what the declared type says (magic numbers; text must be UTF-8 without NUL)."""
    if content_type == "image/png":
        return payload.startswith(b"\x89PNG\r\n\x1a\n")
    if content_type == "image/jpeg":
        return payload.startswith(b"\xff\xd8\xff")
    if content_type == "application/pdf":
        return payload.startswith(b"%PDF-")
    if content_type == "text/plain":
        try:
            return "\x00" not in payload.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return False

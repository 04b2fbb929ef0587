"""One JSON object a line, in Cloud Logging's structured format.

Cloud Logging reads `severity`, `message` and `logging.googleapis.com/trace`
from stdout lines, so production logs need no parsing. Callers pass only
identifiers and counts in `fields`; never secrets, emails or other PII.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRACE_KEY = "logging.googleapis.com/trace"

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)


def trace_from_headers(headers: Any, project_id: str) -> str | None:
    """Cloud Logging's trace resource name from `X-Cloud-Trace-Context` or W3C `traceparent`."""
    raw = headers.get("X-Cloud-Trace-Context") or ""
    trace_id = raw.split("/", 1)[0].strip()
    if not trace_id:
        parts = (headers.get("traceparent") or "").split("-")
        trace_id = parts[1] if len(parts) == 4 else ""
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id) or len(trace_id) > 32:
        return None
    return f"projects/{project_id}/traces/{trace_id.lower()}"


def bind_trace(trace: str | None) -> contextvars.Token:
    return _trace.set(trace)


def unbind_trace(token: contextvars.Token) -> None:
    _trace.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARN" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}) or {})
        trace = _trace.get()
        if trace:
            entry[TRACE_KEY] = trace
        if record.exc_info:
            # The type only: exception text can carry request data.
            entry["error_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            if record.exc_info[1] is not None:
                entry.update(_whereabouts(record.exc_info[1]))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _whereabouts(exc: BaseException) -> dict[str, Any]:
    """What raised, without any message: the types of the exception chain, outermost first, and
    the innermost frames of the first as `file:line function` (code locations carry no data)."""
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return {
        "error_chain": chain,
        "error_at": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames],
    }


_configured = False


def configure() -> None:
    """Routes the root logger to stdout in the structured format; idempotent."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Client libraries are chatty at INFO and may echo request contents.
    for noisy in ("urllib3", "google", "grpc", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def get_logger(name: str) -> logging.Logger:
    configure()
    return logging.getLogger(name)


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Logs `message` with structured `fields` (identifiers and counts only)."""
    logger.log(level, message, extra={"fields": fields})

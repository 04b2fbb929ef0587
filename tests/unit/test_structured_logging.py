from __future__ import annotations

import json
import logging
import sys

import pytest

from orderpally import structured_logging


def format_record(message, level=logging.INFO, exc_info=None, **fields):
    record = logging.LogRecord("t", level, __file__, 1, message, None, exc_info)
    record.fields = fields
    return json.loads(structured_logging.CloudLoggingFormatter().format(record))


def test_one_json_object_with_severity_and_message():
    entry = format_record("hello", level=logging.WARNING, event_id="e1")
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "hello"
    assert entry["event_id"] == "e1"
    assert structured_logging.TRACE_KEY not in entry


def test_trace_is_attached_while_bound():
    trace = structured_logging.trace_from_headers({"X-Cloud-Trace-Context": "abc123/1;o=1"}, "proj")
    token = structured_logging.bind_trace(trace)
    try:
        assert format_record("x")[structured_logging.TRACE_KEY] == "projects/proj/traces/abc123"
    finally:
        structured_logging.unbind_trace(token)
    assert structured_logging.TRACE_KEY not in format_record("x")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ({"X-Cloud-Trace-Context": "not-hex!/1"}, None),
        ({}, None),
    ],
)
def test_trace_header_parsing(headers, expected):
    trace = structured_logging.trace_from_headers(headers, "p")
    assert trace == (f"projects/p/traces/{expected}" if expected else None)


def test_exception_text_is_not_logged():
    try:
        raise ValueError("password=hunter2")
    except ValueError:
        entry = format_record("failed", level=logging.ERROR, exc_info=sys.exc_info())
    assert entry["error_type"] == "ValueError"
    assert "hunter2" not in json.dumps(entry)


def test_an_error_logs_its_chain_and_where_it_was_raised_without_text():
    def rollback_after(cut: Exception) -> None:
        try:
            raise cut
        except ConnectionError:
            raise ValueError("token=abc123")  # noqa: B904 - the context is what is logged

    try:
        rollback_after(ConnectionError("10.0.0.9 refused"))
    except ValueError:
        entry = format_record("failed", level=logging.ERROR, exc_info=sys.exc_info())
    assert entry["error_chain"] == ["ValueError", "ConnectionError"]
    assert entry["error_at"][-1].startswith("test_structured_logging.py:")
    assert entry["error_at"][-1].endswith(" rollback_after")
    text = json.dumps(entry)
    assert "abc123" not in text
    assert "10.0.0.9" not in text

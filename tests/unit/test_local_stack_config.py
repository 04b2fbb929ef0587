from __future__ import annotations

import socket

import pytest

import local_stack


def test_ports_default_and_offset():
    assert local_stack.Ports.from_env({}).firestore == 8080
    assert local_stack.Ports.from_env({}, offset=10000).functions == 18101


def test_port_variables_override():
    ports = local_stack.Ports.from_env({"LOCAL_FIRESTORE_PORT": "7000"})
    assert ports.firestore == 7000
    assert ports.pubsub == 8085


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_bad_port_variable_is_a_clear_error(value):
    with pytest.raises(local_stack.StackError, match="LOCAL_PUBSUB_PORT"):
        local_stack.Ports.from_env({"LOCAL_PUBSUB_PORT": value})


def test_taken_port_is_reported_with_the_variable_to_change():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(local_stack.StackError, match="LOCAL_SMTP_PORT"):
            local_stack.require_free(port, "the SMTP sink", "LOCAL_SMTP_PORT")


def test_push_endpoint_carries_the_topic_path():
    entry = next(e for e in local_stack.load_catalogue() if e.kind == "topic")
    info = local_stack.FunctionProcessInfo(entry, 9000)
    assert info.push_endpoint("p") == f"http://127.0.0.1:9000/projects/p/topics/{entry.trigger['topic']}"


def test_the_frontend_pairings_printed_are_the_ones_the_readme_documents(tmp_path, monkeypatch):
    monkeypatch.delenv("FRONTEND_ORIGINS", raising=False)  # the test stack's own
    stack = local_stack.LocalStack(local_stack.Ports.from_env({}), tmp_path)
    pairings = stack.frontend_pairings()
    assert pairings == [
        ("http://localhost:3000", "http://localhost:8100"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:8100"),
    ]
    readme = (local_stack.REPO / "README.md").read_text()
    for origin, api in pairings:
        assert f"| `{origin}` | `{api}` |" in readme
        assert f"a page here calls the API at {api}" in stack.table()

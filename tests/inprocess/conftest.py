"""The in-process tier: an HTTP function of functions/main.py served by functions-framework's own
Flask app in this process, through its test client, for what needs no process of its own
(routing, request validation, problem documents, CORS, headers, health).

`functions_framework.create_app` builds the same app the `functions-framework` command that the
local stack spawns builds; only the WSGI server in front of it is left out. Each function gets
the environment the stack gives its process (`LocalStack.process_env`).

Those environments differ: each function reaches the emulators through its own IAM proxy port,
as its own service account (K_SERVICE), so their settings differ too, and a process caches its
settings (`config.settings`) and its clients (`orderpally.clients`) once. So a request runs with
its function's environment and caches made from it, dropped again afterwards: the test around
it keeps the tests' own environment (the owner's), and one test may call several functions.

Nothing is started for a function: a test that needs the backends asks for `emulators` as well.
Without them a call that reached a backend would fail, not pass by accident.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import flask
import functions_framework
import pytest
from flask.testing import FlaskClient

import local_stack
from orderpally import clients, config

SOURCE = local_stack.FUNCTIONS_DIR / "main.py"


def forget_process_state() -> None:
    """Drops what a process builds once from its environment: its settings and every client."""
    config.settings.cache_clear()
    for value in vars(clients).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    # clients.firebase_app() finds the default app again; its Auth client holds the endpoint.
    firebase_admin = sys.modules.get("firebase_admin")
    if firebase_admin is not None:
        with contextlib.suppress(ValueError):  # no default app
            firebase_admin.delete_app(firebase_admin.get_app())


@contextlib.contextmanager
def as_process(env: dict[str, str]) -> Iterator[None]:
    """Runs the block as a process with `env` on top of this one's would, with fresh caches."""
    with local_stack.patched_env(env):
        forget_process_state()
        try:
            yield
        finally:
            forget_process_state()


class FunctionClient(FlaskClient):
    """Flask's test client; each request is served as the function's own process would serve it."""

    process_env: dict[str, str]

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)  # a streamed body is produced inside the environment too
        with as_process(self.process_env):
            return super().open(*args, **kwargs)


def create_function_app(stack: local_stack.LocalStack, name: str) -> flask.Flask:
    """The catalogue function `name`'s app, loaded from functions/main.py as its process loads it."""
    entry = stack.entry(name)
    if entry.signature_type != "http":
        raise ValueError(f"{name} takes CloudEvents; the in-process tier serves HTTP functions")
    # create_app loads main.py as a new module `main` and appends its directory to sys.path:
    # put back what the other tiers' `import main` found.
    saved_path, saved_main = list(sys.path), sys.modules.get("main")
    try:
        with as_process(stack.process_env(entry)):  # main.py reads its settings on import
            app = functions_framework.create_app(target=entry.entry_point, source=str(SOURCE), signature_type="http")
    finally:
        sys.path[:] = saved_path
        if saved_main is None:
            sys.modules.pop("main", None)
        else:
            sys.modules["main"] = saved_main
    app.test_client_class = FunctionClient
    return app


@pytest.fixture(scope="session")
def function_apps(stack_config: local_stack.LocalStack) -> Callable[[str], flask.Flask]:
    """Each function's app, made once: its routers hold nothing read from the environment."""
    apps: dict[str, flask.Flask] = {}

    def app(name: str) -> flask.Flask:
        if name not in apps:
            apps[name] = create_function_app(stack_config, name)
        return apps[name]

    return app


@pytest.fixture
def http_function(
    stack_config: local_stack.LocalStack, function_apps: Callable[[str], flask.Flask]
) -> Callable[[str], FunctionClient]:
    """`http_function("health")`: a test client (with its own cookies) of that catalogue function."""

    def client(name: str) -> FunctionClient:
        test_client = function_apps(name).test_client()
        assert isinstance(test_client, FunctionClient)
        test_client.process_env = stack_config.process_env(stack_config.entry(name))
        return test_client

    return client

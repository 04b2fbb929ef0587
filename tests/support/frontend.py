"""The frontend page the browser tests serve themselves: beside the gateway, on an origin the test stack allows."""

from __future__ import annotations


def page_port(gateway_port: int) -> int:
    return gateway_port - 1


def page_origin(gateway_port: int) -> str:
    return f"http://localhost:{page_port(gateway_port)}"

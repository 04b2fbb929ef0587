"""The local stand-in for the HTTPS load balancer: one address, routed by the catalogue's path prefixes.

Production serves every HTTP function under one domain through a URL map
built from `infra/functions.yaml`; locally this process does the same, so a
frontend (and mailed links, and the contract fuzzer) need one base URL. It
adds X-Forwarded-For like the load balancer, which the functions trust only
when TRUSTED_PROXY_HOPS says so.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

import requests
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
    "host",
}


class Gateway:
    def __init__(self, routes: dict[str, str]) -> None:
        # Longest prefix first, as a URL map matches the most specific path.
        self.routes = sorted(routes.items(), key=lambda item: len(item[0]), reverse=True)
        self.session = requests.Session()

    def target(self, path: str) -> str | None:
        for prefix, base in self.routes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return base
        return None

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        base = self.target(request.path)
        if base is None:
            return problem(404, "not-found", "Not found")(environ, start_response)
        try:
            # A body shorter than its Content-Length ends in the handler's read timeout, not a hang.
            data = request.get_data()
        except (OSError, ClientDisconnected):
            return problem(408, "request-timeout", "The request body did not arrive")(environ, start_response)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        forwarded = request.headers.get("X-Forwarded-For")
        client = request.remote_addr or ""
        headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
        # The path exactly as the client sent it, still percent-encoded: decoding it here
        # would turn an encoded "#" or "?" inside a path parameter into URL syntax.
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        try:
            upstream = self.session.request(
                request.method, base + raw, headers=headers, data=data, allow_redirects=False, timeout=60
            )
        except requests.RequestException:
            # As a load balancer answers for a backend that is down or too slow.
            return problem(502, "bad-gateway", "The function did not answer")(environ, start_response)
        passed = [
            (name, value)
            for name, value in upstream.raw.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding"
        ]
        out = Response(upstream.content, status=upstream.status_code, headers=passed)
        return out(environ, start_response)


def problem(status: int, slug: str, title: str) -> Response:
    body = {"type": f"urn:orderpally:problem:{slug}", "title": title, "status": status}
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


class PathOnlyLog(WSGIRequestHandler):
    """Logs requests without their query strings: those may carry secret tokens, as a load balancer's would."""

    timeout = 30.0  # seconds a client may stall mid-request before its connection is closed (--read-timeout)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        self.log("info", '"%s %s %s" %s %s', self.command, path, self.request_version, code, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--routes", required=True, help='JSON object: {"/prefix": "http://127.0.0.1:port", ...}')
    parser.add_argument("--read-timeout", type=float, default=PathOnlyLog.timeout, help="seconds; default %(default)s")
    args = parser.parse_args()
    PathOnlyLog.timeout = args.read_timeout
    server = make_server(
        args.host, args.port, Gateway(json.loads(args.routes)), threaded=True, request_handler=PathOnlyLog
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"gateway on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return


if __name__ == "__main__":
    main()

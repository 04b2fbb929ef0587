"""The local stand-in for the HTTPS load balancer: one address, routed by the catalogue's path prefixes.

Production serves every HTTP function under one domain through a URL map
built from `infra/functions.yaml`; locally this process does the same, so a
frontend (and mailed links, and the contract fuzzer) need one base URL. It
adds X-Forwarded-For as the load balancer does (the client's address, then its
own), which the functions read with the same TRUSTED_PROXY_HOPS=2 as in
production, and holds requests and responses to the size limits that
production's functions have and the emulators do not.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

import requests
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

# Cloud Functions (2nd gen) runs on Cloud Run, which caps an HTTP/1 request at 32 MiB, and a
# response too unless it is streamed (chunked); a larger one reaches the client as a 500
# (https://cloud.google.com/run/quotas, request and response size limits; the Cloud Functions
# quotas page says the same). Larger downloads go through signed Cloud Storage URLs.
MAX_BODY_BYTES = 32 * 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


class LimitedRequest(Request):
    # Werkzeug refuses a declared length over this at once, and a chunked body once it passes it.
    max_content_length = MAX_BODY_BYTES


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
        request = LimitedRequest(environ)
        base = self.target(request.path)
        if base is None:
            return problem(404, "not-found", "Not found")(environ, start_response)
        try:
            # A body shorter than its Content-Length ends in the handler's read timeout, not a hang.
            data = request.get_data()
        except RequestEntityTooLarge:
            too_large = problem(413, "request-too-large", "The request body is larger than 32 MiB")
            return too_large(environ, start_response)
        except (OSError, ClientDisconnected):
            return problem(408, "request-timeout", "The request body did not arrive")(environ, start_response)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = forwarded_for(request.headers.get("X-Forwarded-For"), request.remote_addr, environ)
        # The path exactly as the client sent it, still percent-encoded: decoding it here
        # would turn an encoded "#" or "?" inside a path parameter into URL syntax.
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        try:
            upstream = self.session.request(
                request.method, base + raw, headers=headers, data=data, allow_redirects=False, timeout=60, stream=True
            )
            passed = [
                (name, value)
                for name, value in upstream.raw.headers.items()
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding"
            ]
            if "chunked" in upstream.headers.get("Transfer-Encoding", "").lower():
                # A streamed response is not held to the limit: pass it on as it comes.
                out = Response(upstream.iter_content(STREAM_CHUNK_BYTES), status=upstream.status_code, headers=passed)
                out.call_on_close(upstream.close)
                return out(environ, start_response)
            declared = upstream.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES and request.method != "HEAD":
                upstream.close()
                return response_too_large()(environ, start_response)
            body = upstream.content
        except requests.RequestException:
            # As a load balancer answers for a backend that is down or too slow.
            return problem(502, "bad-gateway", "The function did not answer")(environ, start_response)
        if len(body) > MAX_BODY_BYTES:  # a body delimited by the connection's end, not by a length
            return response_too_large()(environ, start_response)
        out = Response(body, status=upstream.status_code, headers=passed)
        return out(environ, start_response)


def forwarded_for(supplied: str | None, client: str | None, environ: dict) -> str:
    """X-Forwarded-For as Google's external Application Load Balancer sends it on: whatever the
    client supplied, then the client's address, then the load balancer's own. The functions take
    the second-to-last entry (TRUSTED_PROXY_HOPS=2), so a supplied value is never believed."""
    own = environ.get("SERVER_NAME") or "127.0.0.1"
    return ", ".join(part for part in (supplied, client or "", own) if part is not None)


def response_too_large() -> Response:
    # Cloud Run answers the client with a 500 for a function's unstreamed response over the limit.
    return problem(500, "response-too-large", "The function's response is larger than 32 MiB")


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

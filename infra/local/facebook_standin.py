"""A local stand-in for Facebook's OAuth dialog and Graph API endpoints that sign-in uses.

Facebook has no emulator. This server answers the four calls of the
server-side code flow like Facebook does, checks `client_secret` and
`appsecret_proof` like Facebook does, and can be told to misbehave, so the
local stack and the tests exercise every failure the sign-in must survive:

    PUT /_standin/mode?mode=ok|wrong_app|expired|invalid_token|exchange_error|slow|not_json
    PUT /_standin/profile   {"id": ..., "name": ..., "email": ...}   the "user" who consents next
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import secrets
import signal
import threading
import time
from typing import Any
from urllib.parse import urlencode

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

APP_ID = "1234567890"
APP_SECRET = "local-standin-facebook-app-secret-not-secret"  # noqa: S105  local stand-in only
MODES = ("ok", "wrong_app", "expired", "invalid_token", "exchange_error", "slow", "not_json")
SLOW_SECONDS = 10


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _oauth_error(message: str, code: int = 190) -> Response:
    return _json({"error": {"message": message, "type": "OAuthException", "code": code}}, 400)


def _proof(token: str) -> str:
    return hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()


class FacebookStandIn:
    def __init__(self) -> None:
        self.mode = "ok"
        self.profile = {"id": "10001", "name": "Stand-in User", "email": "fb-user@example.com"}
        self.codes: dict[str, tuple[dict[str, str], str]] = {}  # code -> (profile, redirect_uri)
        self.tokens: dict[str, dict[str, str]] = {}  # user access token -> profile
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        handler = {
            "/dialog/oauth": self.dialog,
            "/oauth/access_token": self.access_token,
            "/debug_token": self.debug_token,
            "/me": self.me,
            "/_standin/mode": self.set_mode,
            "/_standin/profile": self.set_profile,
        }.get(request.path)
        response = handler(request) if handler else _json({"error": {"message": "unknown path"}}, 404)
        return response(environ, start_response)

    def dialog(self, request: Request) -> Response:
        """The user consents at once: back to redirect_uri with a code and the state untouched."""
        if request.args.get("client_id") != APP_ID:
            return Response("Invalid App ID", status=400)
        code = "code-" + secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = (dict(self.profile), request.args.get("redirect_uri", ""))
        target = (
            request.args.get("redirect_uri", "")
            + "?"
            + urlencode({"code": code, "state": request.args.get("state", "")})
        )
        return Response(status=302, headers={"Location": target})

    def access_token(self, request: Request) -> Response:
        if self.mode == "slow":
            time.sleep(SLOW_SECONDS)
        if self.mode == "not_json":
            return Response("<html>upstream trouble</html>", status=200, mimetype="text/html")
        if self.mode == "exchange_error":
            return _oauth_error("This authorization code has been used.", 100)
        args = request.args
        with self.lock:
            entry = self.codes.pop(args.get("code", ""), None)
        if args.get("client_id") != APP_ID or args.get("client_secret") != APP_SECRET:
            return _oauth_error("Error validating client secret.", 1)
        if entry is None or entry[1] != args.get("redirect_uri"):
            return _oauth_error("Invalid verification code format.", 100)
        token = "EAA" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = entry[0]
        return _json({"access_token": token, "token_type": "bearer", "expires_in": 5183944})

    def debug_token(self, request: Request) -> Response:
        app_token = request.args.get("access_token", "")
        if app_token != f"{APP_ID}|{APP_SECRET}" or request.args.get("appsecret_proof") != _proof(app_token):
            return _oauth_error("Invalid appsecret_proof provided in the API argument", 100)
        profile = self.tokens.get(request.args.get("input_token", ""))
        now = int(time.time())
        data = {
            "app_id": "999999999" if self.mode == "wrong_app" else APP_ID,
            "type": "USER",
            "application": "OrderPally",
            "is_valid": profile is not None and self.mode != "invalid_token",
            "expires_at": now - 60 if self.mode == "expired" else now + 3600,
            "scopes": ["email", "public_profile"],
            "user_id": (profile or {}).get("id", ""),
        }
        return _json({"data": data})

    def me(self, request: Request) -> Response:
        token = request.args.get("access_token", "")
        if request.args.get("appsecret_proof") != _proof(token):
            return _oauth_error("Invalid appsecret_proof provided in the API argument", 100)
        profile = self.tokens.get(token)
        if profile is None:
            return _oauth_error("Invalid OAuth access token.")
        fields = (request.args.get("fields") or "id").split(",")
        return _json({k: v for k, v in profile.items() if k in fields and v})

    def set_mode(self, request: Request) -> Response:
        mode = request.args.get("mode", "")
        if mode not in MODES:
            return _json({"error": f"mode must be one of {', '.join(MODES)}"}, 400)
        self.mode = mode
        return _json({"mode": mode})

    def set_profile(self, request: Request) -> Response:
        profile = request.get_json(silent=True) or {}
        self.profile = {k: str(v) for k, v in profile.items() if k in ("id", "name", "email")}
        self.mode = "ok"
        return _json(self.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9199)
    args = parser.parse_args()
    server = make_server(args.host, args.port, FacebookStandIn(), threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"Facebook stand-in on http://{args.host}:{args.port} (app id {APP_ID})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()

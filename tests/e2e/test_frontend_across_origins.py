"""A frontend page on its own origin uses the API from a real browser: CORS, cookies and CSRF together.

Headless Chromium loads a page served by this test on one of the frontend origins
(FRONTEND_ORIGINS of the test stack); the page signs in at the gateway with
`fetch(..., {credentials: "include"})`, recovers the CSRF token from `GET /auth/session`
as after a reload, reads its audit trail and creates an API key with that token, as a
frontend would. The same page served from an origin
that is not a frontend can read nothing back.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from support import frontend
from support.browser import running_chromium
from support.identities import PASSWORD, create_customer

pytestmark = pytest.mark.usefixtures("running_stack")

PAGE = """<!doctype html><html><head><title>pending</title></head><body><script>
(async () => {
  const api = API, seen = {};
  try {
    let r = await fetch(api + "/auth/sign-in", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({email: EMAIL, password: PASSWORD})});
    seen.sign_in = r.status;
    await r.json();
    // As after a reload: the page kept nothing, and cannot read the API's CSRF cookie.
    r = await fetch(api + "/auth/session", {credentials: "include"});
    seen.session = r.status;
    const csrf = (await r.json()).csrf_token;
    r = await fetch(api + "/account/audit-trail", {credentials: "include"});
    seen.trail = r.status;
    seen.trail_actions = (await r.json()).entries.map(e => e.action);
    r = await fetch(api + "/account/api-keys", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({name: "from the browser", scopes: ["audit:read"]})});
    seen.key = r.status;
    r = await fetch(api + "/account/api-keys", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "no csrf", scopes: ["audit:read"]})});
    seen.without_csrf = r.status;
    seen.without_csrf_type = (await r.json()).type;
  } catch (error) {
    seen.error = String(error);
  }
  document.title = JSON.stringify(seen);
})();
</script></body></html>"""


@pytest.fixture
def page_server(running_stack) -> Iterator[dict[str, bytes]]:
    """Serves whatever page the test puts in the returned dict, on the frontend page's port."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    port = frontend.page_port(running_stack.ports.gateway)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield pages
    finally:
        server.shutdown()
        server.server_close()


def run_page(browser, url: str) -> dict:
    browser.get(url)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda b: b.title != "pending")
    return json.loads(browser.title)


def paired_api(running_stack, page_origin: str) -> str:
    """The API address `make run` prints beside this frontend origin."""
    return dict(running_stack.frontend_pairings())[page_origin]


def page_for(running_stack, customer, api: str | None = None) -> bytes:
    api = api or paired_api(running_stack, frontend.page_origin(running_stack.ports.gateway))
    text = PAGE.replace("API", json.dumps(api), 1).replace("EMAIL", json.dumps(customer.email), 1)
    return text.replace("PASSWORD", json.dumps(PASSWORD), 1).encode()


def test_a_frontend_page_signs_in_reads_and_writes_across_origins(running_stack, page_server):
    customer = create_customer()
    page_server["/app"] = page_for(running_stack, customer)
    with running_chromium("en", javascript=True) as browser:
        seen = run_page(browser, frontend.page_origin(running_stack.ports.gateway) + "/app")
    assert "error" not in seen, seen
    assert seen["sign_in"] == 200
    assert seen["session"] == 200
    assert seen["trail"] == 200
    assert "sign_in.succeeded" in seen["trail_actions"]
    assert seen["key"] == 201
    assert seen["without_csrf"] == 403  # refused, and the frontend can read why
    assert seen["without_csrf_type"].endswith("csrf-token")


def test_a_page_on_another_origin_reads_nothing(running_stack, page_server):
    customer = create_customer()
    page_server["/app"] = page_for(running_stack, customer)
    with running_chromium("en", javascript=True) as browser:
        # 127.0.0.1 is another origin than localhost, and not a frontend's.
        seen = run_page(browser, f"http://127.0.0.1:{frontend.page_port(running_stack.ports.gateway)}/app")
    assert seen.keys() == {"error"}  # the first fetch already fails: no CORS answer to read


def test_a_page_that_calls_the_api_by_the_other_host_name_is_refused_after_sign_in(running_stack, page_server):
    # What the README warns of: localhost and 127.0.0.1 are different sites, so the browser keeps
    # the SameSite=Lax session cookie from the next call although sign-in itself succeeded.
    customer = create_customer()
    origin = frontend.page_origin(running_stack.ports.gateway)
    assert paired_api(running_stack, origin).startswith("http://localhost:")
    page_server["/app"] = page_for(running_stack, customer, f"http://127.0.0.1:{running_stack.ports.gateway}")
    with running_chromium("en", javascript=True) as browser:
        seen = run_page(browser, origin + "/app")
    assert seen["sign_in"] == 200
    assert seen["trail"] == 401

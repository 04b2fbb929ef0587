"""Secrets and personal data that pass through the stack never reach its logs.

Drives sign-up, sign-in, an API key, an anonymous incident with its secret links and a
Facebook callback through the gateway (the load balancer's stand-in), then reads every
log our code writes: the functions' and the gateway's.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from support.identities import FRONTEND_ORIGIN
from support.waiting import links_in, mails_to, wait_for

pytestmark = pytest.mark.usefixtures("running_stack")


def test_passwords_keys_tokens_and_addresses_stay_out_of_the_logs(running_stack):
    gateway = running_stack.gateway_url
    tag = uuid.uuid4().hex[:10]
    email = f"secretive-{tag}@example.com"
    password = f"correct horse battery {tag}"
    origin = {"Origin": FRONTEND_ORIGIN}
    signed_up = requests.post(
        gateway + "/auth/sign-up",
        json={"email": email, "password": password, "display_name": "Quiet", "kind": "store", "language": "en"},
        headers=origin,
        timeout=30,
    )
    assert signed_up.status_code == 202
    (verify_link,) = links_in(wait_for(lambda: mails_to(running_stack.mailbox, email))[0])
    verify_code = parse_qs(urlsplit(verify_link).query)["oobCode"][0]
    # The emulator applies the code and sends the browser on to the frontend (none runs here).
    assert requests.get(verify_link, timeout=30, allow_redirects=False).status_code == 303

    signed_in = requests.post(
        gateway + "/auth/sign-in", json={"email": email, "password": password}, headers=origin, timeout=30
    )
    assert signed_in.status_code == 200
    wrong = {"email": email, "password": password + "x"}
    assert requests.post(gateway + "/auth/sign-in", json=wrong, headers=origin, timeout=30).status_code == 401
    # Secure cookies: sent by hand over the local plain-HTTP gateway, as the Browser helpers do.
    cookies = {c.name: c.value for c in signed_in.cookies}
    browser = {
        **origin,
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "X-CSRF-Token": cookies["__Host-op_csrf"],
    }
    key_body = {"name": "k", "scopes": ["audit:read"]}
    created = requests.post(gateway + "/account/api-keys", json=key_body, headers=browser, timeout=30)
    assert created.status_code == 201, created.text
    api_key = created.json()["key"]
    assert requests.get(gateway + "/account/audit-trail", headers={"Authorization": f"Bearer {api_key}"}).ok

    reporter = f"reporter-{tag}@example.com"
    incident = {"category": "other", "description": "a page that imitates our sign-in", "contact_email": reporter}
    assert requests.post(gateway + "/incidents", json=incident, timeout=30).status_code == 201
    ack = wait_for(lambda: mails_to(running_stack.mailbox, reporter))[0]
    tokens = [parse_qs(urlsplit(link).query)["token"][0] for link in links_in(ack)]
    for link in links_in(ack):
        assert requests.get(link, timeout=30).status_code == 200

    secrets = [password, api_key, verify_code, *tokens, email, reporter, cookies["__Host-op_session"]]
    log_dir = running_stack.state_dir / "logs"
    logs = [*sorted(log_dir.glob("fn-*.log")), log_dir / "gateway.log"]
    assert len(logs) > 10
    leaks = [
        (log.name, secret[:6] + "…")
        for log in logs
        for secret in secrets
        if re.search(re.escape(secret), log.read_text(errors="replace"), re.IGNORECASE)
    ]
    assert leaks == []

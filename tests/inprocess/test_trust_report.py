"""The trust report's routes in the account and staff functions' own apps: who may read it (a
session, an API key with audit:read, staff with a reason), and JSON or the page, by Accept or
`format`, in the language asked for or the account's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from orderpally import audit, clients
from orderpally.access import api_keys
from orderpally.config import settings
from support.identities import FRONTEND_ORIGIN, Identity, create_customer, create_identity

REPORT = "/account/trust-report"
KMS_KEY = "projects/p/locations/asia-east1/keyRings/orderpally-data/cryptoKeys/orderpally-backups"


def problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json["type"] == f"urn:orderpally:problem:{slug}"
    return response.json


CSRF = "csrf-token-for-tests"


def signed_in(client, identity: Identity) -> dict[str, str]:
    """Gives the test client the browser's session and CSRF cookies (its own cookie jar: Flask's
    test client sends that, not a Cookie header); returns the headers a frontend adds."""
    client.set_cookie("__Host-op_session", identity.session_cookie)
    client.set_cookie("__Host-op_csrf", CSRF)
    return {"Origin": FRONTEND_ORIGIN, "X-CSRF-Token": CSRF}


def key_of(account_id: str, scopes: list[str], name: str = "sync") -> str:
    now = datetime.now(UTC)
    pepper = settings().secret("API_KEY_PEPPER")
    _, key = api_keys.create(clients.firestore_client(), account_id, name, scopes, now + timedelta(days=1), pepper, now)
    return key


def test_without_a_session_or_key_the_report_is_401(http_function):
    problem(http_function("account").get(REPORT), 401, "unauthenticated")
    problem(http_function("staff").get("/staff/accounts/someone/trust-report?reason=checking"), 401, "unauthenticated")


def test_a_key_needs_the_audit_scope_and_staff_use_their_own_route(emulators, http_function):
    customer = create_customer()
    account = http_function("account")
    without = key_of(customer.uid, ["export:create"])
    problem(account.get(REPORT, headers={"Authorization": f"Bearer {without}"}), 403, "forbidden")
    with_scope = key_of(customer.uid, ["audit:read"])
    answered = account.get(REPORT, headers={"Authorization": f"Bearer {with_scope}"})
    assert answered.status_code == 200
    assert answered.json["account"]["id"] == customer.uid
    staff = create_identity(roles=["support"])
    problem(account.get(REPORT, headers=signed_in(account, staff)), 403, "forbidden")


def test_json_by_default_and_the_page_for_a_browser_or_format_html(emulators, http_function):
    customer = create_customer(language="en")
    key_of(customer.uid, ["audit:read"], name="<script>alert('x')</script>")
    account = http_function("account")
    account.process_env = {
        **account.process_env,
        "ENCRYPTION_AT_REST": json.dumps({"backups": {"key": KMS_KEY, "rotation_period": "7776000s"}}),
        "BACKUP_RETENTION_DAYS": "9",
    }
    headers = signed_in(account, customer)

    as_json = account.get(REPORT, headers={**headers, "Accept": "*/*"})
    assert as_json.status_code == 200
    assert as_json.headers["Content-Type"] == "application/json"
    assert as_json.headers["Cache-Control"] == "no-store"
    assert {"Accept", "Cookie", "Authorization"} <= set(as_json.headers["Vary"].replace(" ", "").split(","))
    body = as_json.json
    # The deployment's settings reach the report as given.
    assert body["backups"]["encryption"] == {
        "managed_by": "customer",
        "key": KMS_KEY,
        "rotation_period_seconds": 7776000,
        "rotation_period_days": 90,
    }
    assert body["backups"]["retention_days"] == 9
    assert body["api_keys"][0]["name"] == "<script>alert('x')</script>"

    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = account.get(REPORT, headers={**headers, "Accept": browser})
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    html = page.get_data(as_text=True)
    assert page.headers["Content-Language"] == "en"  # the account's language
    assert '<html lang="en">' in html
    assert "Trust report" in html
    assert "<script" not in html  # the key's name is escaped, and the page runs nothing
    assert "&lt;script&gt;" in html
    assert KMS_KEY in html

    chinese = account.get(f"{REPORT}?format=html&lang=zh-TW", headers=headers)
    assert chinese.headers["Content-Language"] == "zh-TW"
    assert "信任報告" in chinese.get_data(as_text=True)
    forced_json = account.get(f"{REPORT}?format=json", headers={**headers, "Accept": browser})
    assert forced_json.headers["Content-Type"] == "application/json"

    problem(account.get(f"{REPORT}?lang=fr", headers=headers), 422, "validation-error")
    problem(account.get(f"{REPORT}?format=pdf", headers=headers), 422, "validation-error")
    problem(account.get(f"{REPORT}?reason=nosy", headers=headers), 422, "validation-error")


@pytest.fixture
def staff_report(emulators, http_function):
    customer = create_customer()
    staff = create_identity(roles=["support"])
    return http_function("staff"), f"/staff/accounts/{customer.uid}/trust-report", customer, staff


def test_staff_need_a_reason_and_the_csrf_header_and_their_read_is_recorded(staff_report):
    client, path, customer, staff = staff_report
    headers = signed_in(client, staff)
    problem(client.get(path, headers=headers), 422, "invalid-request")
    # A link a staff member follows carries the cookie but not the header: it reads nothing.
    no_header = {k: v for k, v in headers.items() if k != "X-CSRF-Token"}
    problem(client.get(f"{path}?reason=Customer%20called%20us", headers=no_header), 403, "csrf-token")
    assert [e for e in audit.entries(clients.firestore_client(), customer.uid) if e["action"] == "staff.read"] == []

    answered = client.get(f"{path}?reason=Customer%20called%20us", headers=headers)
    assert answered.status_code == 200
    assert answered.json["for_staff"] is True
    [read] = answered.json["staff_accesses"]
    assert (read["role"], read["reason"], read["what"]) == ("support", "Customer called us", "trust_report")
    [entry] = [e for e in audit.entries(clients.firestore_client(), customer.uid) if e["action"] == "staff.read"]
    assert entry["actor"]["id"] == staff.uid  # the company knows who; the customer sees the role
    assert staff.uid not in answered.get_data(as_text=True)

    page = client.get(f"{path}?reason=Customer%20called%20us&format=html", headers=headers)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Customer called us" in page.get_data(as_text=True)


def test_a_customer_cannot_use_the_staff_route(staff_report):
    client, path, customer, _ = staff_report
    problem(client.get(f"{path}?reason=my%20own%20account", headers=signed_in(client, customer)), 403, "forbidden")

"""The trust report page in a real headless Chromium, without JavaScript: every section laid out
in order within the window, the facts the system recorded in their places, both languages.

With SAVE_SCREENSHOTS=1 the English page is saved to docs/trust-report.png (the README's picture).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from orderpally import accounts, audit, clients
from orderpally.access import api_keys
from orderpally.access import http as access_http
from orderpally.access import service as access
from orderpally.access.principal import Principal
from orderpally.backups import exporters
from orderpally.backups import rules as backup_rules
from orderpally.backups import service as backups
from orderpally.config import settings
from orderpally.incidents import intake
from orderpally.incidents import service as incidents
from orderpally.lifecycle import rules as lifecycle_rules
from orderpally.lifecycle import service as lifecycle
from orderpally.notices import rules as notice_rules
from orderpally.notices import service as notices
from support.browser import running_chromium
from support.identities import PASSWORD, create_identity

pytestmark = pytest.mark.usefixtures("running_stack")

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "trust-report.png"
SECTIONS = (
    "data-locations",
    "backups",
    "staff-accesses",
    "sessions",
    "api-keys",
    "legal-holds",
    "retention",
    "requests",
    "incidents",
    "notices",
)
REASON = "The customer asked why an order was refunded"
BASIS = "Taipei District Court order 113-42"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with running_chromium("en-US") as driver:
        yield driver


def seeded_account(tmp_path: Path) -> tuple[str, str]:
    """A store with a little of everything the report shows, made by the capabilities' own use
    cases; returns its id and a session cookie."""
    db = clients.firestore_client()
    now = datetime.now(UTC)
    identity = create_identity()
    uid = identity.uid
    accounts.create(
        db,
        uid,
        {
            "kind": "store",
            "display_name": "Tea shop",
            "email": identity.email,
            "language": "zh-TW",
            "status": "active",
            "plan": None,
            "features": [],
            "created_at": now - timedelta(days=3),
        },
    )
    pepper = settings().secret("API_KEY_PEPPER")
    api_keys.create(db, uid, "Order sync", ["audit:read"], now + timedelta(days=90), pepper, now)
    support = Principal(kind="staff", account_id="staff-support-1", roles=frozenset({"support"}))
    access.staff_read(db, support, uid, "account", REASON, "198.51.100.7")
    admin = audit.Actor("staff", "staff-admin-1", "admin")
    lifecycle.place_hold(
        db,
        uid,
        location_ids=["orders_as_store"],
        reason="note",
        authority=BASIS,
        actor=admin,
        client_address=None,
        now=now,
    )
    effects = lifecycle.Effects(
        db=db, auth_app=clients.firebase_app(), send_email=lambda _: None, publish_deletion=lambda _: None
    )
    lifecycle.request_termination(
        effects,
        uid,
        requested=lifecycle_rules.taipei_today(now) + timedelta(days=30),
        session_issued_at=int(now.timestamp()),
        actor=audit.Actor("customer", uid),
        client_address=None,
        now=now,
    )
    report = incidents.Report.model_validate(
        {"category": "account_compromise", "description": "A sign-in I did not make.", "language": "en"}
    )
    incidents.submit(db, report, incidents.Reporter(uid, identity.email, None), None, intake.table(), now)
    effective = notice_rules.add_one_month(notice_rules.taipei_date(now)).isoformat()
    draft = notices.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {
                "zh-TW": {"title": "結帳流程更新", "body": "內容"},
                "en": {"title": "Checkout update", "body": "Body"},
            },
            "affects": {"all": True},
            "effective_date": effective,
        }
    )
    notices.create_notice(db, draft, "staff-admin-1", now)
    exporter = exporters.EmulatorExporter(os.environ["FIRESTORE_EMULATOR_HOST"], settings().project_id, tmp_path)
    taken = now - timedelta(hours=1)
    backups.take_snapshot(db, exporter, backup_rules.slot_for(taken, now), taken)
    # A real sign-in: its session is the one the report lists, and the browser's.
    ports = dataclasses.replace(access_http.ports(), publish_mail=lambda _: None)
    return uid, access.sign_in(ports, identity.email, PASSWORD, "203.0.113.20", None).cookie


def top(element) -> float:
    return float(element.rect["y"])


def test_the_page_lays_out_every_section_in_order_in_both_languages(running_stack, browser, tmp_path):
    uid, cookie = seeded_account(tmp_path)
    base = running_stack.url("account")
    browser.get(base + "/health-of-nothing")  # a page of the origin, to hold its cookie
    browser.add_cookie({"name": "__Host-op_session", "value": cookie, "path": "/", "secure": True, "httpOnly": True})
    browser.get(base + "/account/trust-report?format=html")

    # The account's language (zh-TW) without a lang parameter.
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-TW"
    assert browser.find_element(By.TAG_NAME, "h1").text == "信任報告"
    browser.find_element(By.LINK_TEXT, "English").click()
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Trust report"

    width = browser.find_element(By.TAG_NAME, "html").rect["width"]
    sections = [browser.find_element(By.ID, section) for section in SECTIONS]
    # Each section shows, one below the other, and no table runs past the window.
    assert all(section.is_displayed() for section in sections)
    assert [top(s) for s in sections] == sorted(top(s) for s in sections)
    for table in browser.find_elements(By.TAG_NAME, "table"):
        assert table.rect["x"] + table.rect["width"] <= width + 1, table.get_attribute("outerHTML")[:200]

    assert browser.find_element(By.ID, "account-id").text == uid
    assert browser.find_element(By.ID, "count-staff").text == "1"
    assert browser.find_element(By.CSS_SELECTOR, ".session td:nth-child(3)").text == "203.0.113.20"
    assert browser.find_element(By.CSS_SELECTOR, ".staff-access .reason").text == REASON
    assert browser.find_element(By.CSS_SELECTOR, ".legal-hold .basis").text == BASIS
    assert browser.find_element(By.CSS_SELECTOR, "tr[data-location='account_profile'] .region").text == "asia-east1"
    assert "pending" in browser.find_element(By.CSS_SELECTOR, "#request-termination td:nth-child(2)").get_attribute(
        "class"
    )
    assert browser.find_element(By.CSS_SELECTOR, "#last-snapshot").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".incident")) == 1
    assert browser.find_element(By.CSS_SELECTOR, ".notice td").text == "Checkout update"
    assert "staff-support-1" not in browser.page_source
    assert "198.51.100.7" not in browser.page_source

    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        height = browser.find_element(By.TAG_NAME, "html").rect["height"]
        browser.set_window_size(1200, int(height) + 120)  # the whole page, as the README shows it
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

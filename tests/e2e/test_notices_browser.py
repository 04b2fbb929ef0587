"""The public notices page in a real headless Chromium: both languages, no JavaScript, a corrected notice's history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from orderpally import clients
from orderpally.notices import rules, service
from support.browser import running_chromium

pytestmark = pytest.mark.usefixtures("running_stack")


@pytest.fixture
def browser(request) -> Iterator[webdriver.Chrome]:
    with running_chromium(getattr(request, "param", "zh-TW")) as driver:
        yield driver


def publish_corrected_notice() -> str:
    db = clients.firestore_client()
    now = datetime.now(UTC)
    today = rules.taipei_date(now)
    draft = service.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {
                "zh-TW": {"title": "結帳流程更新", "body": "舊版說明：結帳頁將改版。"},
                "en": {"title": "Checkout update", "body": "Old wording: the checkout page changes."},
            },
            "affects": {"all": True},
            "effective_date": rules.add_one_month(today).isoformat(),
        }
    )
    notice = service.create_notice(db, draft, "staff", now)
    correction = service.CorrectionDraft.model_validate(
        {
            "text": {
                "zh-TW": {"title": "結帳流程更新", "body": "新版說明：結帳頁將改版並支援超商取貨。"},
                "en": {"title": "Checkout update", "body": "New wording: the checkout adds convenience-store pickup."},
            },
            "effective_date": (rules.add_one_month(today) + timedelta(days=7)).isoformat(),
            "correction_note": "Pickup was missing from the first version.",
        }
    )
    service.correct_notice(db, notice["id"], correction, "staff", now)
    return notice["id"]


def test_page_renders_in_chinese_by_default_switches_to_english_and_shows_history(running_stack, browser):
    notice_id = publish_corrected_notice()
    browser.get(running_stack.url("notices") + "/notices/page")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-TW"
    article = browser.find_element(By.ID, f"notice-{notice_id}")
    assert article.find_element(By.CSS_SELECTOR, ".title").text == "結帳流程更新"
    assert "超商取貨" in article.find_element(By.CSS_SELECTOR, ".body").text
    history = article.find_element(By.CSS_SELECTOR, "details.history")
    old = history.find_element(By.CSS_SELECTOR, ".version[data-version='1']")
    assert not old.is_displayed()  # folded until asked for

    browser.find_element(By.LINK_TEXT, "English").click()
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    article = browser.find_element(By.ID, f"notice-{notice_id}")
    assert "convenience-store pickup" in article.find_element(By.CSS_SELECTOR, ".body").text
    assert "version 2 (corrected)" in article.find_element(By.CSS_SELECTOR, ".meta").text
    article.find_element(By.CSS_SELECTOR, "details.history summary").click()
    old = article.find_element(By.CSS_SELECTOR, ".version[data-version='1']")
    assert old.is_displayed()
    assert "Old wording" in old.text
    assert "Pickup was missing" in article.find_element(By.CSS_SELECTOR, ".correction").text
    browser.save_screenshot(str(running_stack.state_dir / "notices-page-en.png"))


@pytest.mark.parametrize("browser", ["en-US"], indirect=True)
def test_an_english_browser_gets_english_and_unpublished_notices_stay_hidden(running_stack, browser):
    db = clients.firestore_client()
    now = datetime.now(UTC)
    hidden = service.NoticeDraft.model_validate(
        {
            "kind": "service_change",
            "text": {"zh-TW": {"title": "尚未公告", "body": "x"}, "en": {"title": "Not yet published", "body": "x"}},
            "affects": {"all": True},
            "publish_at": (now + timedelta(days=3)).isoformat(),
            "effective_date": rules.add_one_month(rules.taipei_date(now + timedelta(days=3))).isoformat(),
        }
    )
    service.create_notice(db, hidden, "staff", now)
    browser.get(running_stack.url("notices") + "/notices/page")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert browser.find_element(By.ID, "empty").text == "There are no notices."
    assert "Not yet published" not in browser.page_source

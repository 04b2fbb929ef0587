"""Debian's headless Chromium driven by Selenium, started the way this machine allows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def chromium(language: str = "zh-TW", *, javascript: bool = False) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--lang={language}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"intl.accept_languages": language, "webkit.webprefs.javascript_enabled": javascript}
    )
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    return driver


@contextmanager
def running_chromium(language: str = "zh-TW", *, javascript: bool = False) -> Iterator[webdriver.Chrome]:
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make setup`")
    driver = chromium(language, javascript=javascript)
    try:
        yield driver
    finally:
        driver.quit()

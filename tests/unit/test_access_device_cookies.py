"""Device cookies and the sign-in counters they select: plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderpally.access import service, sessions

SECRET = b"a pepper of at least thirty-two characters"
NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
EMAIL = "owner@example.com"


def test_a_device_cookie_proves_the_account_it_was_issued_for_and_names_no_one():
    token = sessions.device_token(SECRET, EMAIL, NOW)
    device = sessions.read_device(SECRET, token, EMAIL, NOW + timedelta(days=1))
    assert device is not None
    assert device.issued_at == int(NOW.timestamp())
    assert "owner" not in token
    assert sessions.device_token(SECRET, EMAIL, NOW) != token  # a nonce per browser


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # MAC changed
        lambda t: t.replace("v1.", "v2.", 1),
        lambda t: t.replace(t.split(".")[1], str(int(t.split(".")[1]) + 1), 1),  # issue time moved
        lambda t: "",
        lambda t: t + ".x",
    ],
)
def test_a_forged_or_altered_device_cookie_proves_nothing(mangle):
    assert sessions.read_device(SECRET, mangle(sessions.device_token(SECRET, EMAIL, NOW)), EMAIL, NOW) is None


def test_a_device_cookie_is_bound_to_the_account_the_key_and_its_lifetime():
    token = sessions.device_token(SECRET, EMAIL, NOW)
    assert sessions.read_device(SECRET, token, "someone.else@example.com", NOW) is None
    assert sessions.read_device(b"another pepper of thirty-two characters!", token, EMAIL, NOW) is None
    assert sessions.read_device(SECRET, token, EMAIL, NOW + sessions.DEVICE_LIFETIME) is None
    assert sessions.read_device(SECRET, token, EMAIL, NOW - timedelta(minutes=5)) is None  # from the future


def test_ending_every_session_ends_device_cookies_issued_before():
    device = sessions.read_device(SECRET, sessions.device_token(SECRET, EMAIL, NOW), EMAIL, NOW)
    issued_ms = int(NOW.timestamp()) * 1000
    assert not sessions.device_revoked(device, None)
    assert not sessions.device_revoked(device, issued_ms)  # issued in the revocation's own second, after it
    assert sessions.device_revoked(device, issued_ms + 1000)


def test_a_trusted_browser_is_counted_only_on_its_own_counter():
    untrusted = service.sign_in_counters("203.0.113.5", EMAIL, None)
    assert [limit for limit, _ in untrusted] == [
        service.SIGN_IN_PER_ADDRESS,
        service.SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS,
        service.SIGN_IN_FAILURES_PER_ACCOUNT,
    ]
    # The per-account lockout, which strangers can fill from many addresses, never applies to it.
    assert service.sign_in_counters("203.0.113.5", EMAIL, "nonce") == ((service.SIGN_IN_FAILURES_PER_DEVICE, "nonce"),)

"""API key format and password rules: plain functions."""

from __future__ import annotations

import re

import pytest

from orderpally import web
from orderpally.access import api_keys, passwords


def test_keys_are_prefixed_checksummed_and_unique():
    seen = set()
    for _ in range(200):
        key_id, key = api_keys.new_key()
        assert re.fullmatch(r"opk_[0-9A-Za-z]{48}", key)
        assert api_keys.parse(key) == key_id
        seen.add(key)
    assert len(seen) == 200


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("0" if k[-1] != "0" else "1"),  # checksum off by one character
        lambda k: k[:10] + ("a" if k[10] != "a" else "b") + k[11:],  # body changed, checksum not
        lambda k: "ghp_" + k[4:],
        lambda k: k + "x",
        lambda k: k[:20] + "-" + k[21:],
        lambda k: "",
    ],
)
def test_malformed_keys_are_rejected_without_a_lookup(mangle):
    _, key = api_keys.new_key()
    with pytest.raises(web.Problem):
        api_keys.parse(mangle(key))


def test_keyed_hash_depends_on_the_pepper():
    _, key = api_keys.new_key()
    assert api_keys.keyed_hash(key, b"a" * 32) != api_keys.keyed_hash(key, b"b" * 32)
    assert key not in api_keys.keyed_hash(key, b"a" * 32)


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("short", False),
        ("1234567", False),
        ("password", False),
        ("Password1", False),  # common passwords are refused whatever their case
        ("iloveyou123", False),
        ("correct horse battery staple", True),
        ("臺北市信義區的珍珠奶茶", True),  # any characters count
        ("x" * 64, True),
        ("y" * 129, False),
    ],
)
def test_password_rules(password, ok):
    assert (passwords.problem_with(password) is None) is ok


def test_a_key_with_non_ascii_characters_is_rejected_not_a_crash():
    key_id, key = api_keys.new_key()
    assert api_keys.parse(key) == key_id
    for bad in (key[:-1] + "é", key[:-6] + "\u00e9" * 6, "opk_" + "é" * (len(key) - 4)):
        with pytest.raises(web.Problem):
            api_keys.parse(bad)

from __future__ import annotations

import pytest

from orderpally.access.principal import Principal, roles_from_claims
from orderpally.web import origin_allowed

ALICE = Principal(kind="customer", account_id="alice", email_verified=True)
ALICE_KEY = Principal(kind="api_key", account_id="alice", scopes=frozenset({"orders:read"}), credential_id="k1")


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"roles": ["admin", "superuser"]}, {"admin"}),
        ({"roles": "admin"}, set()),
        ({"roles": [1, "support"]}, {"support"}),
        ({}, set()),
    ],
)
def test_roles_come_only_from_known_names_in_claims(claims, roles):
    assert roles_from_claims(claims) == roles


def test_scopes_limit_keys_not_sessions():
    assert ALICE_KEY.has_scope("orders:read")
    assert not ALICE_KEY.has_scope("account:terminate")
    assert ALICE.has_scope("anything")


def test_origin_must_match_exactly():
    allowed = ("https://app.orderpally.example",)
    assert origin_allowed("https://app.orderpally.example", allowed)
    assert origin_allowed("https://app.orderpally.example/", allowed)
    assert not origin_allowed("https://app.orderpally.example.evil.test", allowed)
    assert not origin_allowed(None, allowed)

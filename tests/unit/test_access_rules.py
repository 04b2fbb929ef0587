from __future__ import annotations

import pytest

from orderpally.access.principal import Decision, Principal, account_access, roles_from_claims
from orderpally.web import origin_allowed

ALICE = Principal(kind="customer", account_id="alice", email_verified=True)
ALICE_KEY = Principal(kind="api_key", account_id="alice", scopes=frozenset({"orders:read"}), credential_id="k1")
SUPPORT = Principal(kind="staff", account_id="sam", roles=frozenset({"support"}))


def test_owners_reach_their_own_account_only():
    assert account_access(ALICE, "alice") == Decision.OWNER
    assert account_access(ALICE_KEY, "alice") == Decision.OWNER
    assert account_access(ALICE, "bob") is None
    assert account_access(ALICE_KEY, "bob") is None


def test_staff_reach_accounts_only_with_a_named_role():
    assert account_access(SUPPORT, "alice", staff_roles=("support", "security")) == Decision.STAFF
    assert account_access(SUPPORT, "alice", staff_roles=("admin",)) is None
    assert account_access(SUPPORT, "alice") is None
    # A staff member's own uid does not make them the owner of a customer account.
    assert account_access(SUPPORT, "sam") is None


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

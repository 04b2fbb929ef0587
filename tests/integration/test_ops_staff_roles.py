"""The operator CLI for staff roles against the Auth and Firestore emulators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from firebase_admin import auth

from orderpally import audit, clients
from support.identities import create_identity

pytestmark = pytest.mark.usefixtures("emulators")
CLI = Path(__file__).resolve().parents[2] / "infra" / "ops" / "staff_roles.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), "--project", "demo-orderpally", *args], capture_output=True, text=True, timeout=60
    )


def test_the_first_admin_is_made_by_an_operator():
    user = create_identity()
    done = run("--email", user.email, "--roles", "admin,security", "--reason", "first admin of the project")
    assert done.returncode == 0, done.stderr
    assert auth.get_user(user.uid, app=clients.firebase_app()).custom_claims["roles"] == ["admin", "security"]
    assert [e["action"] for e in audit.entries(clients.firestore_client(), user.uid)] == [
        "staff.roles_changed",
        "staff.roles_change_requested",
    ]
    assert run("--uid", user.uid, "--roles", "root", "--reason", "no such role").returncode != 0
    assert run("--uid", user.uid, "--roles", "", "--reason", "left").returncode != 0  # reason too short


def test_no_roles_for_an_address_someone_pre_registered():
    # An attacker signed up first with the address meant for the first admin, and never verified it.
    squatter = create_identity(verified=False)
    refused = run("--email", squatter.email, "--roles", "admin", "--reason", "first admin of the project")
    assert refused.returncode == 2
    assert "verified" in refused.stderr
    assert (auth.get_user(squatter.uid, app=clients.firebase_app()).custom_claims or {}).get("roles") is None
    assert audit.entries(clients.firestore_client(), squatter.uid) == []

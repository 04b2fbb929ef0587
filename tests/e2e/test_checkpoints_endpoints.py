"""The audit checkpoints through the running stack: the schedule's function signs through the
Cloud KMS stand-in as its own identity, the public log serves it, and a customer's proof
downloaded through the gateway passes the offline verifier run as an outsider would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support.identities import browser_headers, create_customer

pytestmark = pytest.mark.usefixtures("running_stack")

ROOT = Path(__file__).resolve().parents[2]


def test_a_scheduled_checkpoint_is_published_and_a_customer_s_proof_verifies_offline(running_stack, tmp_path):
    customer = create_customer()
    # Something the customer's trail records, made through the API.
    made = requests.post(
        running_stack.gateway_url + "/account/api-keys",
        json={"name": "checkpoint test", "scopes": ["audit:read"]},
        headers=browser_headers(customer),
        timeout=10,
    )
    assert made.status_code == 201, made.text
    fired = requests.post(running_stack.url("audit-checkpoint") + "/", json={}, timeout=60)
    assert fired.status_code == 200, fired.text
    assert fired.json()["tree_size"] >= 1

    published = requests.get(running_stack.gateway_url + "/notices/checkpoints", timeout=10)
    assert published.status_code == 200
    latest = published.json()["checkpoints"][0]
    assert latest["tree_size"] == fired.json()["tree_size"]

    proof = requests.get(
        running_stack.gateway_url + "/account/audit-trail/proof", headers=browser_headers(customer), timeout=30
    )
    assert proof.status_code == 200, proof.text
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(proof.json()))
    key = tmp_path / "checkpoint.pem"
    key.write_text(latest["public_key_pem"])
    verified = subprocess.run(
        [sys.executable, "-m", "orderpally_verify", "trail", str(bundle), "--public-key", str(key)],
        cwd=ROOT / "tools",
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "FAILED" not in verified.stdout

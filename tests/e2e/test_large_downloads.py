"""Archives larger than a function may answer (32 MiB) download whole, through the gateway as a
frontend calls it: the API answers with a short-lived signed Cloud Storage URL, to its owner only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import urllib.parse
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from gateway import MAX_BODY_BYTES

from orderpally import audit, clients
from orderpally.access import api_keys
from orderpally.archives import service as archives
from orderpally.config import settings
from orderpally.lifecycle import billing
from orderpally.records import service as records
from support import pubsub
from support.identities import browser_headers, create_customer, create_identity
from support.signed_urls import url_times, verify_v4_url
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("running_stack")

# Past what a function may answer, under what an export copies (larger attachments are listed).
ARCHIVE_BYTES = 40 * 1024 * 1024


def cookie(identity) -> dict[str, str]:
    return {"Cookie": browser_headers(identity)["Cookie"]}


def api_key(account_id: str, scopes: list[str]) -> dict[str, str]:
    now = datetime.now(UTC)
    _, key = api_keys.create(
        clients.firestore_client(),
        account_id,
        "downloads",
        scopes,
        now + timedelta(days=1),
        settings().secret("API_KEY_PEPPER"),
        now,
    )
    return {"Authorization": f"Bearer {key}"}


def actions(account_id: str, action: str) -> list[dict]:
    audit.settle(audit.account_chain(clients.firestore_client(), account_id))
    return [
        e
        for e in (s.to_dict() for s in audit.trail(clients.firestore_client(), account_id).stream())
        if e["action"] == action
    ]


def storage_host(stack) -> str:
    """Where the account function reaches Storage, so where its signed URLs point: the emulator,
    or the IAM proxy's port that acts as the account function (a signed URL reads as its signer)."""
    identity_env = getattr(stack, "identity_env", None)
    host = identity_env("account") if identity_env else settings().emulator_hosts
    return urllib.parse.urlsplit(host["STORAGE_EMULATOR_HOST"]).netloc


def check_link(link: requests.Response, url_signer, asked_at: datetime, stack) -> str:
    """The link's URL: to the account function's Storage, signed by it, valid five minutes."""
    body = link.json()
    url = body["url"]
    signed_at, seconds = url_times(url)
    assert seconds == archives.DOWNLOAD_URL_SECONDS == 300
    assert asked_at - timedelta(seconds=5) <= signed_at <= datetime.now(UTC) + timedelta(seconds=1)
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert signed_at + timedelta(seconds=seconds - 5) <= expires_at <= signed_at + timedelta(seconds=seconds)
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert fields["X-Goog-Credential"].startswith(f"fn-account@{settings().project_id}.iam.gserviceaccount.com/")
    assert urllib.parse.urlsplit(url).netloc == storage_host(stack)
    if url_signer is not None:  # the signer's public key is known: check the signature itself
        verify_v4_url(url, url_signer)
        with pytest.raises(InvalidSignature):  # and that it covers the expiry
            verify_v4_url(url.replace("X-Goog-Expires=300", "X-Goog-Expires=3600"), url_signer)
    return url


def wait_ready(url: str, headers: dict[str, str]) -> dict:
    return wait_for(
        lambda: (r := requests.get(url, headers=headers, timeout=30).json())["status"] == "ready" and r, timeout=120
    )


def test_a_content_export_larger_than_a_function_may_answer_downloads_whole(running_stack, url_signer):
    gateway = running_stack.gateway_url
    alice = create_customer()
    recording = os.urandom(ARCHIVE_BYTES)  # incompressible: the archive stays past 32 MiB
    attachments = clients.storage_client().bucket(settings().attachments_bucket)
    attachments.blob(f"{alice.uid}/recording.bin").upload_from_string(recording)

    accepted = requests.post(gateway + "/account/exports", headers=browser_headers(alice), timeout=30)
    assert accepted.status_code == 202
    export_id = accepted.json()["export_id"]
    status = wait_ready(f"{gateway}/account/exports/{export_id}", cookie(alice))
    assert status["size"] > MAX_BODY_BYTES
    assert status["counts"]["incident_attachments"] == 1

    download_path = f"{gateway}/account/exports/{export_id}/download"
    asked_at = datetime.now(UTC)
    link = requests.get(download_path, headers={**cookie(alice), "Accept": "application/json"}, timeout=30)
    assert link.status_code == 200
    assert link.headers["Cache-Control"] == "no-store"
    assert link.json()["sha256"] == status["sha256"]
    check_link(link, url_signer, asked_at, running_stack)

    # As a browser goes: the API's 303, then the archive from Storage, whole, with its file name.
    download = requests.get(download_path, headers=cookie(alice), timeout=120)
    assert [r.status_code for r in download.history] == [303]
    assert download.status_code == 200
    assert f'filename="orderpally-export-{export_id}.zip"' in download.headers["Content-Disposition"]
    assert len(download.content) == status["size"]
    assert hashlib.sha256(download.content).hexdigest() == status["sha256"]
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.testzip() is None
        assert archive.read("incident_attachments/recording.bin") == recording
    # Each link handed out is in the owner's trail.
    assert [e["details"]["export_id"] for e in actions(alice.uid, "export.downloaded")] == [export_id, export_id]


def test_only_the_paid_up_owner_gets_an_export_link(running_stack):
    gateway = running_stack.gateway_url
    alice, bob = create_customer(), create_customer()
    accepted = requests.post(gateway + "/account/exports", headers=browser_headers(alice), timeout=30)
    export_id = accepted.json()["export_id"]
    wait_ready(f"{gateway}/account/exports/{export_id}", cookie(alice))
    download_path = f"{gateway}/account/exports/{export_id}/download"

    def answer(headers: dict[str, str]) -> requests.Response:
        return requests.get(download_path, headers=headers, allow_redirects=False, timeout=30)

    refused = {
        "anonymous": (answer({}), 401),
        "another account": (answer(cookie(bob)), 404),
        "another account's key": (answer(api_key(bob.uid, ["export:create"])), 404),
        "a key without the scope": (answer(api_key(alice.uid, ["audit:read"])), 403),
        "staff": (answer(cookie(create_identity(roles=["support"]))), 403),
    }
    for who, (response, status) in refused.items():
        assert response.status_code == status, who
        assert "Location" not in response.headers, who
        assert "url" not in response.json(), who
    assert answer(api_key(alice.uid, ["export:create"])).status_code == 303  # the owner's key

    # Money owed since the export was built: no content leaves until it is paid (clause 3.2(b)(ii)).
    invoice = {
        "account_id": alice.uid,
        "sequence": 1,
        "kind": "invoice_issued",
        "amount": 800,
        "reference": "INV-1",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    pubsub.publisher().publish(billing.TOPIC, billing.MESSAGE_TYPE, invoice)
    wait_for(lambda: billing.outstanding(clients.firestore_client(), alice.uid)[0] == 800)
    owed = answer(cookie(alice))
    assert owed.status_code == 402
    assert owed.json()["outstanding_amount"] == 800
    assert "Location" not in owed.headers
    assert len(actions(alice.uid, "export.downloaded")) == 1  # the key's link only
    assert actions(bob.uid, "export.downloaded") == []


def test_records_larger_than_a_function_may_answer_download_whole(running_stack, url_signer):
    gateway = running_stack.gateway_url
    alice, bob = create_customer(), create_customer()
    base = gateway + "/account/records-requests"
    created = requests.post(
        base, json={"from": "2026-01-01", "to": "2027-12-31"}, headers=browser_headers(alice), timeout=30
    )
    assert created.status_code == 202
    request_id = created.json()["request_id"]
    wait_ready(f"{base}/{request_id}", cookie(alice))

    # Records past 32 MiB would take the builder hundreds of thousands of audit entries: the test
    # stores an archive that size where the builder put the real one, as the builder records it.
    ref = clients.firestore_client().collection(records.RECORDS).document(request_id)
    stored = ref.get().to_dict()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("records.jsonl", os.urandom(ARCHIVE_BYTES))
    payload = buffer.getvalue()
    exports = clients.storage_client().bucket(settings().exports_bucket)
    exports.blob(stored["object"]).upload_from_string(payload, content_type="application/zip")
    ref.update({"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)})

    assert requests.get(f"{base}/{request_id}/download", headers=cookie(bob), allow_redirects=False).status_code == 404
    asked_at = datetime.now(UTC)
    link = requests.get(f"{base}/{request_id}/download", headers=cookie(alice), allow_redirects=False, timeout=30)
    assert link.status_code == 303
    url = check_link(link, url_signer, asked_at, running_stack)
    assert link.headers["Location"] == url
    download = requests.get(url, timeout=120)
    assert download.status_code == 200
    assert f'filename="orderpally-records-{request_id}.zip"' in download.headers["Content-Disposition"]
    assert download.content == payload
    assert hashlib.sha256(download.content).hexdigest() == link.json()["sha256"]
    # The same digest as an RFC 9530 Repr-Digest value (a structured-field byte sequence).
    expected = base64.b64encode(hashlib.sha256(download.content).digest()).decode()
    assert link.json()["repr_digest"] == f"sha-256=:{expected}:"
    assert [e["details"]["request_id"] for e in actions(alice.uid, "records.downloaded")] == [request_id]

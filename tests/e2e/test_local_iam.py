"""The local stack's IAM: each function reaches Google's services only with its catalogue grants.

Each function talks to the emulators through the IAM proxy (infra/local/iam_proxy.py) on a
port that stands for its service account; what its `grants` in infra/functions.yaml do not
allow is refused as production refuses it, with the exceptions the client libraries raise there.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path

import pytest
import requests

import local_stack
from orderpally.config import settings
from support.identities import browser_headers, create_customer

pytestmark = pytest.mark.usefixtures("running_stack")


def via(stack: local_stack.LocalStack, function: str) -> str:
    return f"http://127.0.0.1:{stack.identity_port(function)}"


def sign_blob(stack: local_stack.LocalStack, function: str, email: str, payload: bytes) -> requests.Response:
    return requests.post(
        f"{via(stack, function)}/v1/projects/-/serviceAccounts/{email}:signBlob",
        json={"payload": base64.b64encode(payload).decode()},
        timeout=10,
    )


def having(stack: local_stack.LocalStack, *grants: str, lacking: tuple[str, ...] = ()) -> str:
    """A catalogue function holding every one of `grants` and no grant starting with one of `lacking`.

    Chosen by grant, not by name, so the tests stay true while the catalogue's grants change.
    """
    for entry in stack.catalogue:
        if set(grants) <= set(entry.grants) and not any(g.startswith(lacking) for g in entry.grants if lacking):
            return entry.name
    pytest.skip(f"no catalogue function has {grants} without {lacking}")


TOKEN_CREATOR = "self:roles/iam.serviceAccountTokenCreator"
AUTH_ADMIN, AUTH_VIEWER = "project:roles/firebaseauth.admin", "project:roles/firebaseauth.viewer"


def email_of(stack: local_stack.LocalStack, function: str) -> str:
    import iam_proxy

    return iam_proxy.service_account_email(function, stack.project_id)


def test_sign_blob_signs_for_a_function_granted_token_creator_on_itself(running_stack):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    payload = b"GOOG4-RSA-SHA256\n20260101T000000Z\n..."
    signer = having(running_stack, TOKEN_CREATOR)
    signed = sign_blob(running_stack, signer, email_of(running_stack, signer), payload)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert set(body) == {"keyId", "signedBlob"}
    key = serialization.load_pem_public_key(running_stack.signing_public_key_pem())
    key.verify(base64.b64decode(body["signedBlob"]), payload, padding.PKCS1v15(), hashes.SHA256())  # raises if not

    # Google publishes the account's public certificates; so does the stand-in.
    certs = requests.get(
        f"{via(running_stack, signer)}/service_accounts/v1/metadata/x509/{email_of(running_stack, signer)}", timeout=10
    ).json()
    assert body["keyId"] in certs


def test_sign_blob_is_refused_as_iam_credentials_refuses(running_stack):
    unsigned = having(running_stack, lacking=(TOKEN_CREATOR,))
    signer = having(running_stack, TOKEN_CREATOR)
    for function, as_function in (
        (unsigned, unsigned),  # no self:roles/iam.serviceAccountTokenCreator
        (signer, unsigned),  # token creator on itself only, not on another account
    ):
        refused = sign_blob(running_stack, function, email_of(running_stack, as_function), b"payload")
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["status"] == "PERMISSION_DENIED"
        assert "iam.serviceAccounts.signBlob" in error["message"]


SIGNER_ROLE = "key:checkpoints:roles/cloudkms.signer"


def test_the_checkpoint_key_signs_only_for_a_function_granted_signer_on_it(running_stack):
    from orderpally.checkpoints import signing

    key = settings().checkpoint_signing_key
    granted = having(running_stack, SIGNER_ROLE)
    signer = signing.KmsSigner(key, requests.Session(), f"{via(running_stack, granted)}/v1")
    message = b"origin\n1\nroot\n"
    assert signing.verify_signature(signer.public_key_pem(), message, signer.sign(message))
    other = having(running_stack, "project:roles/firebaseauth.admin", lacking=("key:",))
    refused = requests.post(
        f"{via(running_stack, other)}/v1/{key}:asymmetricSign",
        json={"digest": {"sha256": base64.b64encode(b"x" * 32).decode()}},
        timeout=10,
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert requests.get(f"{via(running_stack, other)}/v1/{key}/publicKey", timeout=10).status_code == 403


def test_storage_refuses_a_bucket_the_identity_has_no_role_on(running_stack):
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    def bucket_as(function: str, name: str) -> storage.Bucket:
        client = storage.Client(
            project=running_stack.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": via(running_stack, function)},
        )
        return client.bucket(name)

    name = f"iam-probe/{uuid.uuid4().hex}.txt"
    # No grant on any bucket: Storage answers 403, the library raises Forbidden.
    nothing = having(running_stack, lacking=("bucket:", "project:roles/storage."))
    with pytest.raises(exceptions.Forbidden) as refused:
        bucket_as(nothing, settings().attachments_bucket).blob(name).upload_from_string(b"x")
    assert "storage.objects.create" in str(refused.value)
    # objectViewer on exports reads them, never writes them, and reads no other bucket.
    reader = having(running_stack, "bucket:exports:roles/storage.objectViewer", lacking=("bucket:attachments:",))
    with pytest.raises(exceptions.Forbidden):
        bucket_as(reader, settings().exports_bucket).blob(name).upload_from_string(b"x")
    with pytest.raises(exceptions.Forbidden):
        list(bucket_as(reader, settings().attachments_bucket).list_blobs())
    # objectAdmin on a bucket still does not read its metadata (storage.buckets.get).
    admin = having(running_stack, "bucket:exports:roles/storage.objectAdmin")
    with pytest.raises(exceptions.Forbidden):
        bucket_as(admin, settings().exports_bucket).reload()
    # What is granted works, through the same proxy.
    bucket_as(admin, settings().exports_bucket).blob(name).upload_from_string(b"granted")
    assert bucket_as(reader, settings().exports_bucket).blob(name).download_as_bytes() == b"granted"


def test_pubsub_refuses_publishing_to_a_topic_without_the_publisher_role(running_stack, monkeypatch):
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    who = having(running_stack, "topic:notice-email:roles/pubsub.publisher", lacking=("topic:account-deletion:",))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{running_stack.identity_port(who)}")
    publisher = pubsub_v1.PublisherClient()
    granted = publisher.topic_path(running_stack.project_id, "notice-email")
    refused = publisher.topic_path(running_stack.project_id, "account-deletion")
    assert publisher.publish(granted, b"{}").result(timeout=30)
    with pytest.raises(exceptions.PermissionDenied):
        publisher.publish(refused, b"{}").result(timeout=30)
    with pytest.raises(exceptions.PermissionDenied):  # publisher holds pubsub.topics.publish only
        publisher.get_topic(topic=granted)


def test_firebase_authentication_allows_admin_viewer_or_nothing(running_stack):
    customer = create_customer()
    project = running_stack.project_id

    def call(function: str, method: str, body: dict) -> requests.Response:
        url = f"{via(running_stack, function)}/identitytoolkit.googleapis.com/v1/projects/{project}/accounts:{method}"
        return requests.post(url, json=body, headers={"Authorization": "Bearer owner"}, timeout=10)

    admin = having(running_stack, AUTH_ADMIN)
    viewer = having(running_stack, AUTH_VIEWER, lacking=(AUTH_ADMIN,))
    nothing = having(running_stack, lacking=("project:roles/firebaseauth.",))
    lookup = {"localId": [customer.uid]}
    assert call(admin, "lookup", lookup).status_code == 200
    assert call(viewer, "lookup", lookup).status_code == 200  # the viewer reads ...
    update = {"localId": customer.uid, "disableUser": True}
    refused = call(viewer, "update", update)  # ... and only reads
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert call(nothing, "lookup", lookup).status_code == 403
    assert call(admin, "update", update).status_code == 200


def start_incidents_as(
    stack: local_stack.LocalStack, identity: str, port: int, log: Path
) -> local_stack.ManagedProcess:
    """One more incidents process acting with another function's identity."""
    entry = next(e for e in stack.catalogue if e.name == "incidents")
    function = local_stack.ManagedProcess(
        f"incidents-as-{identity}",
        [
            str(Path(sys.executable).with_name("functions-framework")),
            *("--source", str(local_stack.FUNCTIONS_DIR / "main.py"), "--target", entry.entry_point),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        log,
        cwd=local_stack.FUNCTIONS_DIR,
        env={**stack.function_env, **local_stack.function_specific_env(entry), **stack.identity_env(identity)},
    )
    function.start()
    local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{port}/incidents/policy"), function)
    return function


def test_an_upload_without_the_attachments_grant_fails_as_in_production(running_stack, tmp_path):
    # incidents as the catalogue says uploads; the same code as an identity without the grant cannot.
    customer = create_customer()
    headers = browser_headers(customer)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    port = running_stack.ports.functions + 320
    # An identity that can do the rest of a report (sessions, the acknowledgement mail) but not this.
    other = next(
        (
            e.name
            for e in running_stack.catalogue
            if "topic:notice-email:roles/pubsub.publisher" in e.grants
            and {AUTH_ADMIN, AUTH_VIEWER} & set(e.grants)
            and not any(g.startswith("bucket:attachments:") for g in e.grants)
        ),
        None,
    )
    if other is None:
        pytest.skip("no catalogue function could file a report without the attachments grant")
    log = tmp_path / "incidents-as-other.log"
    function = start_incidents_as(running_stack, other, port, log)
    try:
        for base, expected in ((running_stack.url("incidents"), 201), (f"http://127.0.0.1:{port}", 500)):
            body = {
                "category": "suspected_data_leak",
                "description": "Orders of mine appear on a paste site.",
                "language": "en",
            }
            reference = requests.post(f"{base}/incidents", json=body, headers=headers, timeout=30).json()["reference"]
            answer = requests.post(
                f"{base}/incidents/{reference}/attachments",
                data=png,
                headers={**headers, "Content-Type": "image/png"},
                timeout=30,
            )
            assert answer.status_code == expected, answer.text
    finally:
        function.stop()
    assert '"error_type": "Forbidden"' in log.read_text()  # Storage's 403, raised as in production


def test_every_query_so_far_was_checked_against_the_declared_indexes(running_stack):
    checked = [json.loads(line) for line in (running_stack.iam_dir / "queries.jsonl").read_text().splitlines()]
    assert checked, "the proxy recorded no Firestore query"
    assert {entry["identity"] for entry in checked} - {"owner"}, "no function's query went through the proxy"

"""What the local IAM proxy lets each identity do, on plain data (infra/local/iam_proxy.py)."""

from __future__ import annotations

import pytest

import local_stack
from iam_proxy import (
    OWNER,
    Identity,
    auth_permitted,
    service_account_email,
    storage_action,
)

PROJECT = "demo-orderpally"


def identity(*grants: str, name: str = "fn") -> Identity:
    return Identity(name, service_account_email(name, PROJECT), frozenset(grants))


def allowed(who: Identity, method: str, path: str, query: dict[str, list[str]] | None = None) -> bool:
    action = storage_action(method, path, query or {})
    assert action is not None
    aliases = {f"{PROJECT}-{a}": a for a in ("backups", "exports", "attachments")}
    return all(p in who.storage_permissions(aliases.get(b)) for p, b in action.permissions)


OBJECT = f"/storage/v1/b/{PROJECT}-attachments/o/anonymous%2Fincidents%2Fx.png"
UPLOAD = f"/upload/storage/v1/b/{PROJECT}-attachments/o"
DOWNLOAD = f"/download/storage/v1/b/{PROJECT}-attachments/o/anonymous%2Fincidents%2Fx.png"


def test_object_viewer_reads_and_lists_but_never_writes():
    viewer = identity("bucket:attachments:roles/storage.objectViewer")
    assert allowed(viewer, "GET", OBJECT)
    assert allowed(viewer, "GET", DOWNLOAD)
    assert allowed(viewer, "GET", f"/storage/v1/b/{PROJECT}-attachments/o", {"prefix": ["a/"]})
    assert not allowed(viewer, "POST", UPLOAD, {"uploadType": ["multipart"]})
    assert not allowed(viewer, "DELETE", OBJECT)


def test_object_creator_creates_only():
    creator = identity("bucket:attachments:roles/storage.objectCreator")
    assert allowed(creator, "POST", UPLOAD, {"uploadType": ["multipart"]})
    assert not allowed(creator, "GET", OBJECT)
    assert not allowed(creator, "DELETE", OBJECT)
    assert not allowed(creator, "GET", f"/storage/v1/b/{PROJECT}-attachments/o")
    # Overwriting deletes the old object, which objectCreator may not: the proxy checks existence.
    assert storage_action("POST", UPLOAD, {"name": ["a"]}).creates == (f"{PROJECT}-attachments", "a")


def test_object_user_and_admin_do_everything_with_objects_but_not_buckets():
    for role in ("roles/storage.objectUser", "roles/storage.objectAdmin"):
        who = identity(f"bucket:attachments:{role}")
        for method, path in (("GET", OBJECT), ("DELETE", OBJECT), ("PATCH", OBJECT), ("POST", UPLOAD)):
            assert allowed(who, method, path)
        assert not allowed(who, "GET", f"/storage/v1/b/{PROJECT}-attachments")  # storage.buckets.get
        assert not allowed(who, "GET", "/storage/v1/b", {"project": [PROJECT]})  # storage.buckets.list
        assert not allowed(who, "POST", "/storage/v1/b")  # storage.buckets.create


def test_a_grant_on_one_bucket_gives_nothing_on_another():
    who = identity("bucket:exports:roles/storage.objectAdmin")
    assert allowed(who, "GET", f"/storage/v1/b/{PROJECT}-exports/o/a")
    assert not allowed(who, "GET", OBJECT)
    assert not allowed(who, "GET", "/storage/v1/b/somebody-elses/o/a")


def test_copies_need_read_on_the_source_and_create_on_the_target():
    path = f"/storage/v1/b/{PROJECT}-attachments/o/a/rewriteTo/b/{PROJECT}-exports/o/b"
    action = storage_action("POST", path, {})
    assert set(action.permissions) == {
        ("storage.objects.get", f"{PROJECT}-attachments"),
        ("storage.objects.create", f"{PROJECT}-exports"),
    }
    assert action.creates == (f"{PROJECT}-exports", "b")


def test_resumable_upload_chunks_ride_on_their_checked_start():
    assert storage_action("PUT", UPLOAD, {"uploadType": ["resumable"], "upload_id": ["u"]}).permissions == ()


def test_the_owner_may_do_anything_and_emulator_controls_are_owner_only():
    owner = Identity(OWNER, "owner@x", frozenset())
    assert allowed(owner, "POST", "/storage/v1/b")
    assert not allowed(identity("bucket:attachments:roles/storage.objectAdmin"), "GET", "/wipe")


LOOKUP = f"/identitytoolkit.googleapis.com/v1/projects/{PROJECT}/accounts:lookup"
UPDATE = f"/identitytoolkit.googleapis.com/v1/projects/{PROJECT}/accounts:update"
SESSION = f"/identitytoolkit.googleapis.com/v1/projects/{PROJECT}:createSessionCookie"
SIGN_IN = "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"


@pytest.mark.parametrize(
    ("grants", "path", "permitted"),
    [
        (("project:roles/firebaseauth.admin",), UPDATE, True),
        (("project:roles/firebaseauth.admin",), SESSION, True),
        (("project:roles/firebaseauth.viewer",), LOOKUP, True),
        (
            ("project:roles/firebaseauth.viewer",),
            f"/identitytoolkit.googleapis.com/v1/projects/{PROJECT}/accounts:query",
            True,
        ),
        (("project:roles/firebaseauth.viewer",), UPDATE, False),
        (("project:roles/firebaseauth.viewer",), SESSION, False),
        ((), LOOKUP, False),
        ((), SIGN_IN, True),  # end-user methods are authorised by the API key, not IAM
        ((), "/securetoken.googleapis.com/v1/token", True),
        (("project:roles/firebaseauth.admin",), f"/emulator/v1/projects/{PROJECT}/accounts", False),
    ],
)
def test_firebase_authentication_admin_viewer_or_nothing(grants, path, permitted):
    assert auth_permitted(identity(*grants), "POST", path) is permitted


def test_publishing_and_signing_need_their_grants():
    who = identity("topic:notice-email:roles/pubsub.publisher", "self:roles/iam.serviceAccountTokenCreator")
    assert who.may_publish("notice-email")
    assert not who.may_publish("account-deletion")
    assert who.may_sign_as(who.email)
    assert not who.may_sign_as(service_account_email("auth", PROJECT))  # only its own account
    assert not identity().may_sign_as(identity().email)


def test_service_accounts_are_named_as_terraform_names_them():
    assert (
        service_account_email("due-terminations", PROJECT) == f"fn-due-terminations@{PROJECT}.iam.gserviceaccount.com"
    )
    long = "x" * 40
    assert service_account_email(long, PROJECT).split("@")[0] == ("fn-" + long)[:30]


def test_every_function_gets_its_own_proxy_port_for_every_google_endpoint():
    stack = local_stack.LocalStack(local_stack.Ports.from_env({}), local_stack.REPO / ".local" / "unused")
    ports = {stack.identity_port(info.entry.name) for info in stack.functions}
    assert len(ports) == len(stack.functions)
    assert stack.identity_port() not in ports
    env = stack.identity_env("incidents")
    port = stack.identity_port("incidents")
    assert env["FIRESTORE_EMULATOR_HOST"] == env["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{port}"
    assert env["STORAGE_EMULATOR_HOST"] == env["IAM_CREDENTIALS_BASE_URL"] == f"http://127.0.0.1:{port}"
    # In-process code (tests, demo data) reaches Firestore through the owner's port, checked for indexes.
    assert stack.function_env["FIRESTORE_EMULATOR_HOST"] == f"127.0.0.1:{stack.identity_port()}"


def test_the_firestore_emulators_export_stands_in_for_the_managed_export_and_its_role():
    from iam_proxy import firestore_http

    export = f"/emulator/v1/projects/{PROJECT}:export"
    assert firestore_http(export)
    assert firestore_http(f"/v1/projects/{PROJECT}/databases/(default)/documents/a/b")
    assert not firestore_http(f"/emulator/v1/projects/{PROJECT}/accounts")  # the Auth emulator's
    assert identity("project:roles/datastore.importExportAdmin").may_use_firestore_http(export)
    assert not identity().may_use_firestore_http(export)
    assert not identity().may_use_firestore_http(f"/emulator/v1/projects/{PROJECT}/databases/(default)/documents")

"""The agreement's promises, checked on the parsed Terraform."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

TAIWAN = {"asia-east1"}
LOCATION_KEYS = ("location", "region", "location_id")


def test_terraform_is_formatted():
    if not shutil.which("terraform"):
        pytest.fail("terraform is not installed")
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "terraform"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_region_defaults_to_taiwan_and_validation_refuses_anything_else(terraform):
    region = terraform.variables["region"]
    assert region["default"] == "asia-east1"
    condition = region["validation"][0]["condition"]
    allowed = set(re.findall(r'"([a-z0-9-]+)"', re.search(r"contains\(\[(.*?)\]", condition).group(1)))
    assert allowed == TAIWAN
    assert "var.region" in condition


def test_every_regional_resource_is_in_the_region_variable(terraform):
    checked = 0
    for (rtype, name), body in terraform.resources.items():
        for key in LOCATION_KEYS:
            if key in body:
                assert body[key] == "var.region", f"{rtype}.{name}.{key} = {body[key]}"
                checked += 1
    assert checked >= 6


def test_no_region_outside_taiwan_is_written_anywhere(terraform_text):
    regions = set(
        re.findall(r"\b(?:asia|europe|us|northamerica|southamerica|australia|me|africa)-[a-z]+\d\b", terraform_text)
    )
    assert regions <= TAIWAN, regions


def test_pubsub_messages_stay_in_the_region(terraform):
    for name, topic in terraform.of_type("google_pubsub_topic").items():
        policy = terraform.block(topic, "message_storage_policy")
        assert policy["allowed_persistence_regions"] == ["var.region"], name


def test_functions_are_created_from_the_catalogue_and_a_content_hashed_bundle(terraform):
    function = terraform.resource("google_cloudfunctions2_function", "function")
    assert function["for_each"] == "local.functions"
    assert "yamldecode(file(var.catalogue_path))" in terraform.files["locals.tf"]["locals"][0]["catalogue_raw"]
    source = terraform.resource("google_storage_bucket_object", "functions")
    assert "data.archive_file.functions.output_sha256" in source["name"]
    storage_source = terraform.block(
        terraform.block(terraform.block(function, "build_config"), "source"), "storage_source"
    )
    assert storage_source["object"] == "google_storage_bucket_object.functions.name"


def test_only_http_functions_take_traffic_from_the_load_balancer(terraform):
    service = terraform.block(terraform.resource("google_cloudfunctions2_function", "function"), "service_config")
    assert service["ingress_settings"] == (
        'each.value.trigger.kind == "http" ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_INTERNAL_ONLY"'
    )


def test_every_topic_has_a_dead_letter_topic_and_every_push_subscription_retries_into_it(terraform, catalogue):
    assert terraform.resource("google_pubsub_topic", "topic")["for_each"] == "local.topics"
    assert terraform.resource("google_pubsub_topic", "dead_letter")["for_each"] == "local.topics"
    push = terraform.resource("google_pubsub_subscription", "push")
    assert push["for_each"] == "local.topic_functions"
    dead_letter = terraform.block(push, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"].startswith("google_pubsub_topic.dead_letter[")
    retry = terraform.block(push, "retry_policy")
    assert retry["minimum_backoff"]
    assert retry["maximum_backoff"]
    oidc = terraform.block(terraform.block(push, "push_config"), "oidc_token")
    assert oidc["service_account_email"] == "google_service_account.push_invoker.email"
    assert any(f["trigger"]["kind"] == "topic" for f in catalogue.values())


def test_one_scheduler_job_per_scheduled_function_calling_with_oidc(terraform):
    job = terraform.resource("google_cloud_scheduler_job", "job")
    assert job["for_each"] == "local.schedule_functions"
    assert job["time_zone"] == "each.value.trigger.time_zone"
    target = terraform.block(job, "http_target")
    assert target["http_method"] == "POST"
    assert terraform.block(target, "oidc_token")["service_account_email"] == (
        "google_service_account.scheduler_invoker.email"
    )


def test_one_service_account_per_function_and_no_broad_roles(terraform, terraform_text):
    assert terraform.resource("google_service_account", "function")["for_each"] == "local.functions"
    for banned in ("roles/owner", "roles/editor", "roles/iam.securityAdmin", "roles/resourcemanager.projectIamAdmin"):
        assert banned not in terraform_text


def test_only_the_public_api_is_invokable_by_everyone(terraform):
    public = [
        (name, body)
        for name, body in terraform.of_type("google_cloud_run_service_iam_member").items()
        if body["member"] in ("allUsers", "allAuthenticatedUsers")
    ]
    assert [name for name, _ in public] == ["public_http"]
    assert public[0][1]["for_each"] == "local.http_functions"


def test_firestore_is_in_taiwan_with_point_in_time_recovery_and_daily_backups(terraform):
    database = terraform.resource("google_firestore_database", "main")
    assert database["location_id"] == "var.region"
    assert database["point_in_time_recovery_enablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert database["delete_protection_state"] == "DELETE_PROTECTION_ENABLED"
    schedule = terraform.resource("google_firestore_backup_schedule", "daily")
    assert int(schedule["retention"].rstrip("s")) >= 7 * 86400


def test_backups_are_kept_at_least_seven_days_and_encrypted_with_our_key(terraform):
    retention_days = terraform.variables["backup_retention_days"]
    assert retention_days["default"] >= 7
    assert "var.backup_retention_days >= 7" in retention_days["validation"][0]["condition"]
    backups = terraform.files["storage.tf"]["locals"][0]["data_buckets"]["backups"]
    assert backups["retention_days"] == "var.backup_retention_days"
    assert backups["delete_after_days"] == "var.backup_retention_days"
    assert backups["locked"] == "var.lock_backup_retention"
    bucket = terraform.resource("google_storage_bucket", "data")
    assert terraform.block(bucket, "encryption")["default_kms_key_name"].startswith("google_kms_crypto_key.buckets[")
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["uniform_bucket_level_access"] is True
    dynamic = {name: spec for entry in bucket["dynamic"] for name, spec in entry.items()}
    assert dynamic["retention_policy"]["content"][0]["retention_period"] == (
        "retention_policy.value.retention_days * 86400"
    )
    condition = dynamic["lifecycle_rule"]["content"][0]["condition"][0]
    assert condition["age"] == "lifecycle_rule.value.delete_after_days"
    assert dynamic["lifecycle_rule"]["content"][0]["action"][0]["type"] == "Delete"


def test_every_bucket_is_encrypted_with_a_rotated_key(terraform):
    for name, bucket in terraform.of_type("google_storage_bucket").items():
        assert "google_kms_crypto_key.buckets" in terraform.block(bucket, "encryption")["default_kms_key_name"], name
    key = terraform.resource("google_kms_crypto_key", "buckets")
    assert int(key["rotation_period"].rstrip("s")) <= 90 * 86400


def test_checkpoints_are_signed_by_an_asymmetric_p256_key_only_the_checkpoint_function_may_use(catalogue, terraform):
    key = terraform.resource("google_kms_crypto_key", "checkpoints")
    assert key["purpose"] == "ASYMMETRIC_SIGN"
    template = terraform.block(key, "version_template")
    assert template["algorithm"] == "EC_SIGN_P256_SHA256"
    users = {name for name, entry in catalogue.items() for grant in entry.get("grants", []) if grant.startswith("key:")}
    assert users == {"audit-checkpoint"}
    assert "key_grants" in terraform.resource("google_kms_crypto_key_iam_member", "function")["for_each"]


def test_catalogue_grants_are_well_formed_and_name_real_things(catalogue, terraform):
    buckets = set(terraform.files["storage.tf"]["locals"][0]["data_buckets"])
    for name, entry in catalogue.items():
        for grant in entry.get("grants", []):
            parts = grant.split(":")
            assert parts[0] in {"project", "topic", "bucket", "self", "key"}, (name, grant)
            assert parts[-1].startswith("roles/"), (name, grant)
            assert parts[-1] not in {"roles/owner", "roles/editor"}, (name, grant)
            if parts[0] == "bucket":
                assert len(parts) == 3, (name, grant)
                assert parts[1] in buckets, (name, grant)
            if parts[0] == "topic":
                assert len(parts) == 3, (name, grant)
                assert len(parts[1]) >= 3, (name, grant)
            if parts[0] == "self":  # a role on the function's own service account only
                assert len(parts) == 2, (name, grant)
            if parts[0] == "key":  # a role on the one key a grant may name: the checkpoints' signing key
                assert parts[1:] in (
                    ["checkpoints", "roles/cloudkms.signer"],
                    ["checkpoints", "roles/cloudkms.publicKeyViewer"],
                )
    assert 'startswith(g, "topic:")' in terraform.files["locals.tf"]["locals"][0]["topics"]


def test_clients_cannot_touch_firestore_directly(terraform):
    rules = (Path(__file__).resolve().parents[2] / "terraform" / "firestore.rules").read_text()
    assert "allow read, write: if false;" in rules
    assert "allow read, write: if true" not in rules
    release = terraform.resource("google_firebaserules_release", "firestore")
    assert "google_firebaserules_ruleset.firestore.name" in str(release["ruleset_name"])


def test_request_logs_of_urls_carrying_secrets_are_not_kept(terraform):
    """Every query parameter of the contract that carries a secret is caught by the exclusion; paging is not."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "functions" / "openapi.yaml").read_text())
    secret_names = {"token", "code"}
    # On the _Default sink, so it drops the load balancer's and Cloud Run's own request logs alike.
    sink = terraform.resource("google_logging_project_sink", "default")
    assert sink["name"] == "_Default"
    (exclusion,) = [e for e in sink["exclusions"] if e["name"] == "orderpally-secret-urls"]
    log_filter = exclusion["filter"].replace('\\"', '"')
    assert 'resource.type="http_load_balancer"' in log_filter
    assert 'resource.type="cloud_run_revision"' in log_filter
    pattern = re.compile(re.search(r'requestUrl=~"(.+)"$', log_filter).group(1))
    queries = {
        (path, param["name"])
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        if isinstance(operation, dict)
        for param in operation.get("parameters", [])
        if param.get("in") == "query"
    }
    assert {name for _, name in queries} & secret_names, "the contract has no secret query parameters any more?"
    for path, name in queries:
        for url in (f"https://api.example{path}?{name}=s3cr3t", f"https://api.example{path}?lang=en&{name}=s3cr3t"):
            assert bool(pattern.search(url)) == (name in secret_names), url


def test_every_collection_the_code_gives_an_expire_at_expires(terraform):
    """The code sets `expire_at` on these (grep for it); without a TTL policy they would pile up forever."""
    import ast

    functions_dir = Path(__file__).resolve().parents[2] / "functions" / "orderpally"
    writers = sorted(
        str(path.relative_to(functions_dir))
        for path in functions_dir.rglob("*.py")
        if any(isinstance(n, ast.Constant) and n.value == "expire_at" for n in ast.walk(ast.parse(path.read_text())))
    )
    # Where each collection's expire_at is written; a new writer must be added here and in firestore.tf.
    expected = {
        "event_ledger": "events.py",
        "email_deliveries": "messaging/store.py",
        "rate_limits": "limiter.py",
        "revoked_sessions": "access/store.py",
        "facebook_links": "access/store.py",
        "incident_requests": "incidents/store.py",
        "audit_link_locks": "audit.py",
    }
    assert writers == sorted(set(expected.values()))
    fields = terraform.of_type("google_firestore_field")
    ttl = fields["ttl"]
    assert "ttl_config" in ttl
    assert ttl["field"] == "expire_at"
    locals_ = [block for content in terraform.files.values() for block in content.get("locals", [])]
    collections = next(b["expiring_collections"] for b in locals_ if "expiring_collections" in b)
    assert set(re.findall(r'"([a-z_]+)"', str(collections))) == set(expected)

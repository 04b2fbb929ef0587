"""One `terraform apply` on an empty project works, and what it deploys can serve sign-in.

The emulators accept anything: every API "enabled", no secret versions, no metric
propagation, any Web API key. These tests hold the parsed Terraform to what production
enforces on the first apply (DESIGN.md section 6).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Which API each resource type calls; the longest matching prefix wins. A resource type
# missing here fails the test below: add it with its API (and enable the API in apis.tf).
API_OF_TYPE: dict[str, frozenset[str]] = {
    "google_apikeys_": frozenset({"apikeys.googleapis.com"}),
    "google_artifact_registry_": frozenset({"artifactregistry.googleapis.com"}),
    "google_cloud_run_": frozenset({"run.googleapis.com"}),
    "google_cloud_scheduler_": frozenset({"cloudscheduler.googleapis.com"}),
    "google_cloudbuild_": frozenset({"cloudbuild.googleapis.com"}),
    "google_cloudfunctions2_": frozenset(
        {
            "cloudfunctions.googleapis.com",
            "run.googleapis.com",
            "cloudbuild.googleapis.com",
            "artifactregistry.googleapis.com",
        }
    ),
    "google_compute_": frozenset({"compute.googleapis.com"}),
    "google_firebaserules_": frozenset({"firebaserules.googleapis.com"}),
    "google_firestore_": frozenset({"firestore.googleapis.com"}),
    "google_identity_platform_": frozenset({"identitytoolkit.googleapis.com"}),
    "google_kms_": frozenset({"cloudkms.googleapis.com"}),
    "google_logging_": frozenset({"logging.googleapis.com"}),
    "google_monitoring_": frozenset({"monitoring.googleapis.com"}),
    "google_org_policy_": frozenset({"orgpolicy.googleapis.com"}),
    "google_project_iam_": frozenset({"cloudresourcemanager.googleapis.com"}),
    "google_project_iam_custom_role": frozenset({"iam.googleapis.com"}),
    "google_pubsub_": frozenset({"pubsub.googleapis.com"}),
    "google_secret_manager_": frozenset({"secretmanager.googleapis.com"}),
    "google_service_account": frozenset({"iam.googleapis.com"}),
    "google_storage_": frozenset({"storage.googleapis.com"}),
}
NO_API = {"google_project_service"}  # enabling an API needs only Service Usage, enabled by hand (README)

# A grant to a Google-managed service agent needs the agent, which the agent's API creates.
AGENT_REFERENCES = {
    "local.pubsub_agent": "pubsub.googleapis.com",
    "data.google_storage_project_service_account.gcs": "storage.googleapis.com",
}

REFERENCE = re.compile(
    r"(?<![\w.])(?:(data)\.)?((?:google|archive)_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[\"([^\"]+)\"\])?|(?<![\w.])local\.(\w+)"
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    return []


class Graph:
    """Resources, data sources and locals, each with what it references (depends_on included)."""

    def __init__(self, terraform: Any) -> None:
        self.edges: dict[str, set[tuple[str, str | None]]] = {}
        self.text: dict[str, str] = {}
        for (rtype, name), body in terraform.resources.items():
            self._add(f"{rtype}.{name}", body)
        for (rtype, name), body in terraform.data.items():
            self._add(f"data.{rtype}.{name}", body)
        for content in terraform.files.values():
            for block in content.get("locals", []):
                for name, value in block.items():
                    self._add(f"local.{name}", value)
        self.enabled = self._enabled_apis(terraform)

    def _add(self, node: str, body: Any) -> None:
        refs = set()
        texts = _strings(body)
        for text in texts:
            for data, rtype, name, key, local in REFERENCE.findall(text):
                if local:
                    refs.add((f"local.{local}", None))
                else:
                    refs.add((f"{'data.' if data else ''}{rtype}.{name}", key or None))
        self.edges[node] = refs
        self.text[node] = "\n".join(texts)

    @staticmethod
    def _enabled_apis(terraform: Any) -> set[str]:
        body = terraform.resource("google_project_service", "apis")
        return set(re.findall(r'"([a-z0-9.-]+\.googleapis\.com)"', body["for_each"]))

    def apis_waited_for(self, node: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """The APIs whose enablement Terraform finishes before it creates `node`."""
        found: set[str] = set()
        for ref, key in self.edges.get(node, ()):
            if ref == "google_project_service.apis":
                found |= {key} if key else self.enabled
            elif ref in self.edges and ref not in seen:
                found |= self.apis_waited_for(ref, seen | {node})
        return found


def required_apis(rtype: str) -> frozenset[str]:
    prefixes = [p for p in API_OF_TYPE if rtype.startswith(p)]
    assert prefixes, f"{rtype}: which API does it use? add it to API_OF_TYPE"
    return API_OF_TYPE[max(prefixes, key=len)]


def test_every_api_a_resource_uses_is_enabled_and_the_resource_waits_for_it(terraform):
    graph = Graph(terraform)
    missing = []
    for rtype, name in terraform.resources:
        if rtype in NO_API:
            continue
        needed = set(required_apis(rtype))
        text = graph.text[f"{rtype}.{name}"]
        needed |= {api for ref, api in AGENT_REFERENCES.items() if ref in text}
        assert needed <= graph.enabled, f"{rtype}: enable {needed - graph.enabled} in apis.tf"
        waited = graph.apis_waited_for(f"{rtype}.{name}")
        if not needed <= waited:
            missing.append(f"{rtype}.{name} does not wait for {sorted(needed - waited)}")
    assert missing == []


def test_apis_the_first_deploy_needs_are_enabled(terraform):
    enabled = Graph(terraform).enabled
    assert {
        "compute.googleapis.com",
        "orgpolicy.googleapis.com",
        "iamcredentials.googleapis.com",  # custom tokens and signed URLs (signBlob)
        "identitytoolkit.googleapis.com",
        "apikeys.googleapis.com",
    } <= enabled


# --- 1. sign-in --------------------------------------------------------------------


def test_the_web_api_key_is_created_restricted_to_identity_toolkit_and_given_to_the_functions(terraform):
    key = terraform.resource("google_apikeys_key", "identity_toolkit")
    targets = terraform.block(terraform.block(key, "restrictions"), "api_targets")
    assert targets["service"] == "identitytoolkit.googleapis.com"
    env = terraform.files["functions.tf"]["locals"][0]["common_env"]
    assert env["FIREBASE_WEB_API_KEY"] == "google_apikeys_key.identity_toolkit.key_string"


def test_identity_platform_allows_email_sign_in_on_our_domains_only_and_no_client_sign_up(terraform):
    config = terraform.resource("google_identity_platform_config", "auth")
    email = terraform.block(terraform.block(config, "sign_in"), "email")
    assert email["enabled"] is True
    assert email["password_required"] is True
    assert "var.domain" in config["authorized_domains"]
    assert "var.frontend_origins" in config["authorized_domains"]
    permissions = terraform.block(terraform.block(config, "client"), "permissions")
    assert permissions["disabled_user_signup"] is True  # sign-up goes through our rules (Admin SDK)


def test_facebook_sign_in_is_configured_only_with_an_app_id_and_a_sensitive_secret(terraform):
    idp = terraform.resource("google_identity_platform_default_supported_idp_config", "facebook")
    assert idp["idp_id"] == "facebook.com"
    assert idp["count"] == "local.facebook_sign_in ? 1 : 0"
    assert idp["client_id"] == "var.facebook_app_id"
    assert idp["client_secret"] == "var.facebook_app_secret"
    assert terraform.variables["facebook_app_secret"]["sensitive"] is True
    assert terraform.variables["smtp_password"]["sensitive"] is True
    assert 'var.facebook_app_id != ""' in terraform_locals(terraform)["facebook_sign_in"]


# --- 2. load balancer --------------------------------------------------------------


def test_the_serverless_neg_names_the_cloud_run_service_by_its_short_name(terraform):
    neg = terraform.resource("google_compute_region_network_endpoint_group", "function")
    service = terraform.block(neg, "cloud_run")["service"]
    # service_config[0].service is projects/<p>/locations/<r>/services/<name>: the NEG takes <name>.
    assert (
        service
        == 'reverse(split("/", google_cloudfunctions2_function.function[each.key].service_config[0].service))[0]'
    )


def test_the_load_balancer_address_is_an_output_for_dns(terraform):
    outputs = {
        name: body
        for content in terraform.files.values()
        for block in content.get("output", [])
        for name, body in block.items()
    }
    assert outputs["load_balancer_ip"]["value"] == "google_compute_global_address.api.address"


# --- 3. secrets --------------------------------------------------------------------


def terraform_locals(terraform) -> dict[str, Any]:
    return {
        k: v for content in terraform.files.values() for block in content.get("locals", []) for k, v in block.items()
    }


def test_every_mounted_secret_has_a_version_in_the_same_apply(terraform, catalogue):
    """A function mounting `latest` of a secret with no version fails to deploy."""
    generated = terraform.resource("google_secret_manager_secret_version", "generated")
    assert generated["for_each"] == "local.generated_secrets"
    assert "uuid()" in generated["secret_data"]
    assert "secret_data" in str(terraform.block(generated, "lifecycle")["ignore_changes"])  # generated once
    assert set(terraform.variables["generated_secrets"]["default"]) == {"api-key-pepper", "pseudonym-key"}
    provided = terraform.resource("google_secret_manager_secret_version", "provided")
    assert provided["for_each"] == "local.provided_secrets"
    provided_from = terraform_locals(terraform)["provided_secret_values"]
    assert provided_from == {"facebook-app-secret": "var.facebook_app_secret", "smtp-password": "var.smtp_password"}
    every_secret = {s for entry in catalogue.values() for s in entry.get("secrets", [])}
    assert every_secret == set(terraform.variables["generated_secrets"]["default"]) | set(provided_from)
    function = terraform.resource("google_cloudfunctions2_function", "function")
    assert "google_secret_manager_secret_version.generated" in function["depends_on"]
    assert "google_secret_manager_secret_version.provided" in function["depends_on"]
    mounts = terraform.block(function, "service_config")["dynamic"][0]["secret_environment_variables"]
    assert mounts["for_each"] == "local.mounted_secrets[each.key]"


def test_configuration_dependent_secrets_are_mounted_only_when_configured(terraform, catalogue):
    assert catalogue["auth"]["secrets_when"] == {"facebook-app-secret": "facebook_sign_in"}
    assert catalogue["notice-email"]["secrets_when"] == {"smtp-password": "smtp_auth"}
    conditions = terraform_locals(terraform)["secret_conditions"]
    for entry in catalogue.values():
        assert set(entry.get("secrets_when", {})) <= set(entry["secrets"])
        assert set(entry.get("secrets_when", {}).values()) <= set(conditions)
    assert conditions["smtp_auth"] == 'var.smtp_username != ""'
    assert conditions["facebook_sign_in"] == "local.facebook_sign_in"
    grants = terraform_locals(terraform)["secret_grants"]
    assert "local.mounted_secrets" in str(grants)


def test_the_local_stack_still_reads_the_catalogue(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "infra" / "local"))
    from local_stack import load_catalogue

    entries = {e.name: e for e in load_catalogue()}
    assert "facebook-app-secret" in entries["auth"].secrets


# --- 5. alerts ---------------------------------------------------------------------


def test_alerts_match_logs_directly_so_no_metric_must_propagate_first(terraform):
    assert terraform.of_type("google_logging_metric") == {}
    for name in ("log_alert", "scheduler_failure"):
        policy = terraform.resource("google_monitoring_alert_policy", name)
        condition = terraform.block(policy, "conditions")
        assert "condition_matched_log" in condition, name
        assert "condition_threshold" not in condition, name
        strategy = terraform.block(policy, "alert_strategy")
        assert terraform.block(strategy, "notification_rate_limit")["period"], name
    log_alert = terraform.block(terraform.resource("google_monitoring_alert_policy", "log_alert"), "conditions")
    assert 'jsonPayload.alert=\\"${each.key}\\"' in terraform.block(log_alert, "condition_matched_log")["filter"]


# --- 6. Firestore rules ------------------------------------------------------------


def test_the_rules_release_of_the_default_database_is_named_cloud_firestore(terraform):
    release = terraform.resource("google_firebaserules_release", "firestore")
    assert release["name"] == "cloud.firestore"


# --- 7, 10. logs: secret URLs and location -----------------------------------------


def test_the_default_sink_writes_to_a_log_bucket_in_taiwan(terraform):
    sink = terraform.resource("google_logging_project_sink", "default")
    assert sink["name"] == "_Default"
    bucket = terraform.resource("google_logging_project_bucket_config", "default")
    assert bucket["location"] == "var.region"
    assert bucket["bucket_id"] != "_Default"
    assert sink["destination"] == "logging.googleapis.com/${google_logging_project_bucket_config.default.id}"
    # What the built-in _Default sink routes: everything but the _Required sink's audit logs.
    assert 'NOT LOG_ID(\\"cloudaudit.googleapis.com/activity\\")' in sink["filter"]


def test_secret_urls_are_excluded_from_every_sink_that_stores_request_logs(terraform):
    """The _Default sink's exclusion covers the load balancer's and Cloud Run's own request logs."""
    assert terraform.of_type("google_logging_project_exclusion") == {}  # one place: the sink's exclusions
    sink = terraform.resource("google_logging_project_sink", "default")
    (exclusion,) = [e for e in sink["exclusions"] if e["name"] == "orderpally-secret-urls"]
    log_filter = exclusion["filter"].replace('\\"', '"')
    assert 'resource.type="http_load_balancer"' in log_filter
    assert 'resource.type="cloud_run_revision"' in log_filter
    for name, other in terraform.of_type("google_logging_project_sink").items():
        if name != "default":
            assert "httpRequest" not in other["filter"], name
            assert "cloud_run_revision" not in other["filter"], name
            assert "cloudaudit.googleapis.com" in other["filter"], name


# --- 8. propagation ----------------------------------------------------------------


def test_function_builds_wait_for_the_build_accounts_grants(terraform):
    function = terraform.resource("google_cloudfunctions2_function", "function")
    assert terraform.block(function, "build_config")["service_account"] == "google_service_account.build.id"
    for grant in (
        "google_project_iam_member.build",
        "google_storage_bucket_iam_member.build_reads_source",
        "google_artifact_registry_repository_iam_member.build_writes_images",
    ):
        assert grant in function["depends_on"], grant


def test_encrypted_buckets_and_topics_wait_for_their_service_agents_key_grants(terraform):
    for name, bucket in terraform.of_type("google_storage_bucket").items():
        assert "google_kms_crypto_key_iam_member.gcs_uses_bucket_keys" in bucket["depends_on"], name
    grant = terraform.resource("google_kms_crypto_key_iam_member", "gcs_uses_bucket_keys")
    assert "data.google_storage_project_service_account.gcs.email_address" in grant["member"]
    for name, topic in terraform.of_type("google_pubsub_topic").items():
        assert "google_kms_crypto_key_iam_member.pubsub_uses_topic_key" in topic["depends_on"], name


# --- 9. Pub/Sub CMEK ---------------------------------------------------------------


def test_every_topic_is_encrypted_with_our_rotated_key_which_the_pubsub_agent_may_use(terraform):
    for name, topic in terraform.of_type("google_pubsub_topic").items():
        assert topic["kms_key_name"] == "google_kms_crypto_key.pubsub.id", name
    key = terraform.resource("google_kms_crypto_key", "pubsub")
    assert int(key["rotation_period"].rstrip("s")) <= 90 * 86400
    grant = terraform.resource("google_kms_crypto_key_iam_member", "pubsub_uses_topic_key")
    assert grant["crypto_key_id"] == "google_kms_crypto_key.pubsub.id"
    assert grant["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant["member"] == "local.pubsub_agent"


# --- 12. build and deploy accounts ---------------------------------------------------


def _project_roles_of(terraform, account: str) -> list[str]:
    roles = []
    locals_ = terraform_locals(terraform)
    for member in terraform.of_type("google_project_iam_member").values():
        if f"google_service_account.{account}." not in member["member"]:
            continue
        if member.get("for_each"):
            listed = member["for_each"]
            if isinstance(listed, str) and listed.startswith("local."):
                listed = locals_[listed.removeprefix("local.")]
            roles += re.findall(r"roles/[\w.]+|google_project_iam_custom_role\.\w+", str(listed))
        else:
            roles.append(member["role"])
    return roles


def test_no_build_account_reads_storage_project_wide(terraform):
    for account in ("build", "deploy"):
        roles = _project_roles_of(terraform, account)
        assert roles, account
        storage = [r for r in roles if r.startswith("roles/storage.")]
        assert storage == [], (account, storage)
    source = terraform.resource("google_storage_bucket_iam_member", "build_reads_source")
    assert source["bucket"] == "google_storage_bucket.source.name"
    assert source["role"] == "roles/storage.objectViewer"
    images = terraform.resource("google_artifact_registry_repository_iam_member", "build_writes_images")
    assert images["role"] == "roles/artifactregistry.writer"
    function = terraform.resource("google_cloudfunctions2_function", "function")
    assert terraform.block(function, "build_config")["docker_repository"] == (
        "google_artifact_registry_repository.functions.id"
    )
    storage_role = terraform.resource("google_project_iam_custom_role", "deploy_storage")
    assert not [p for p in storage_role["permissions"] if p.startswith("storage.objects.")]


def test_cloud_build_runs_as_the_deploy_account_not_the_function_build_account(terraform):
    trigger = terraform.resource("google_cloudbuild_trigger", "deploy")
    assert trigger["service_account"] == "google_service_account.deploy.id"
    assert trigger["filename"] == "cloudbuild.yaml"
    assert terraform.block(trigger, "repository_event_config")["repository"] == "var.cloudbuild_repository"
    assert trigger["substitutions"]["_STATE_BUCKET"] == "var.state_bucket"


# --- 13. configuration ---------------------------------------------------------------


def production_env(terraform, catalogue: dict, name: str) -> dict[str, str]:
    """The environment Terraform gives function `name`, with placeholder values."""
    common = terraform.files["functions.tf"]["locals"][0]["common_env"]
    env = {key: f"placeholder-{key.lower()}" for key in common}
    env.update(
        ENVIRONMENT="production",
        FRONTEND_ORIGINS="https://app.example",
        PUBLIC_BASE_URL="https://api.example",
        SMTP_PORT="587",
        SMTP_SECURITY="starttls",
        SNAPSHOT_MAX_AGE_HOURS="26",
        INCIDENT_DEADLINES="",
        FACEBOOK_APP_ID="",
        SMTP_USERNAME="",
        BACKUP_RETENTION_DAYS="7",
        ENCRYPTION_AT_REST='{"firestore": {"managed_by": "google"}}',
        CHECKPOINT_SIGNING_KEY="projects/p/locations/asia-east1/keyRings/r/cryptoKeys/c/cryptoKeyVersions/1",
    )
    if catalogue[name]["trigger"]["kind"] == "topic":
        env["MAX_EVENT_AGE_SECONDS"] = "3600"
    for secret in catalogue[name].get("secrets", []):
        env[secret.upper().replace("-", "_")] = "s" * 32
    return env


def test_terraform_gives_every_function_every_setting_production_requires(terraform, catalogue):
    from orderpally.config import PRODUCTION_REQUIRED, load_settings

    common = set(terraform.files["functions.tf"]["locals"][0]["common_env"])
    assert set(PRODUCTION_REQUIRED) <= common, set(PRODUCTION_REQUIRED) - common
    for name in catalogue:
        settings = load_settings(production_env(terraform, catalogue, name))
        assert settings.is_production, name


def test_settings_with_a_local_default_are_required_in_production():
    from orderpally.config import PRODUCTION_REQUIRED

    assert {
        "FIREBASE_WEB_API_KEY",  # the Auth emulator takes any key; Identity Toolkit does not
        "PUBLIC_BASE_URL",
        "MAIL_FROM",
        "BACKUPS_BUCKET",
        "EXPORTS_BUCKET",
        "ATTACHMENTS_BUCKET",
        "SMTP_HOST",
        "SMTP_PORT",
        "FRONTEND_ORIGINS",
        "GOOGLE_CLOUD_PROJECT",
        "SECURITY_ONCALL_EMAIL",
        "SECURITY_CONTACT_EMAIL",
        "SNAPSHOT_SCHEDULER_JOB",
        "BACKUP_RETENTION_DAYS",  # the trust report would state a default as fact
        "ENCRYPTION_AT_REST",
        "CHECKPOINT_SIGNING_KEY",
    } <= set(PRODUCTION_REQUIRED)


def test_every_required_setting_missing_alone_stops_every_function(terraform, catalogue):
    from orderpally.config import PRODUCTION_REQUIRED, ConfigurationError, load_settings

    for name in catalogue:
        for variable in PRODUCTION_REQUIRED:
            env = production_env(terraform, catalogue, name)
            env.pop(variable)
            with pytest.raises(ConfigurationError, match=variable):
                load_settings(env)


def test_the_catalogue_keys_terraform_reads_are_known():
    raw = yaml.safe_load((REPO / "infra" / "functions.yaml").read_text())
    for name, spec in raw["functions"].items():
        for secret, condition in spec.get("secrets_when", {}).items():
            assert isinstance(secret, str), name
            assert isinstance(condition, str), name


def test_http_functions_bound_their_streamed_reads_as_the_local_stack_does(terraform, catalogue):
    """Where a client waits, a streamed Firestore read stuck on a silent connection must end in
    time for a 503, in production as in the local stack (which the outage tests cut)."""
    import local_stack
    from orderpally.config import load_settings

    function = terraform.resource("google_cloudfunctions2_function", "function")
    env = " ".join(str(terraform.block(function, "service_config")["environment_variables"]).split())
    cap = local_stack.HTTP_STREAM_DEADLINE_SECONDS
    http = 'each.value.trigger.kind == "http" ? {FIRESTORE_STREAM_DEADLINE_SECONDS = '
    assert http + f"tostring(min({cap}, floor(each.value.timeout_seconds / 2)))}}" in env.replace("{ ", "{")
    for entry in local_stack.load_catalogue():
        local = local_stack.function_specific_env(entry).get("FIRESTORE_STREAM_DEADLINE_SECONDS")
        if entry.kind != "http":
            assert local is None, entry.name  # builds and schedules keep the long default
            continue
        assert local == str(min(cap, catalogue[entry.name]["timeout_seconds"] // 2)), entry.name
        assert 0 < int(local) <= catalogue[entry.name]["timeout_seconds"] / 2
        assert load_settings({"FIRESTORE_STREAM_DEADLINE_SECONDS": local}).firestore_stream_deadline_seconds == int(
            local
        )

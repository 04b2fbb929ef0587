from __future__ import annotations

import pytest

from orderpally.config import ConfigurationError, load_settings


def test_local_defaults_need_no_environment():
    cfg = load_settings({})
    assert cfg.environment == "local"
    assert cfg.region == "asia-east1"
    assert not cfg.is_production


@pytest.mark.parametrize(
    "variable",
    ["FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"],
)
def test_production_refuses_any_emulator_variable(variable):
    with pytest.raises(ConfigurationError, match=variable):
        load_settings({"ENVIRONMENT": "production", "SMTP_SECURITY": "starttls", variable: "127.0.0.1:1"})


PRODUCTION_SECRETS = {"PSEUDONYM_KEY": "p" * 32}
# What Terraform gives every deployed function (functions.tf common_env), with placeholder values.
DEPLOYED = {
    "GOOGLE_CLOUD_PROJECT": "p",
    "FIREBASE_WEB_API_KEY": "AIza-placeholder",
    "PUBLIC_BASE_URL": "https://api.orderpally.example",
    "FRONTEND_ORIGINS": "https://app.orderpally.example",
    "MAIL_FROM": "OrderPally <no-reply@orderpally.example>",
    "SMTP_HOST": "smtp.orderpally.example",
    "SMTP_PORT": "587",
    "BACKUPS_BUCKET": "p-backups",
    "EXPORTS_BUCKET": "p-exports",
    "ATTACHMENTS_BUCKET": "p-attachments",
    "SECURITY_ONCALL_EMAIL": "oncall@orderpally.example",
    "SECURITY_CONTACT_EMAIL": "security@orderpally.example",
    "SNAPSHOT_SCHEDULER_JOB": "projects/p/locations/asia-east1/jobs/orderpally-firestore-snapshot",
    "BACKUP_RETENTION_DAYS": "7",
    "ENCRYPTION_AT_REST": '{"firestore": {"managed_by": "google"}}',
    "CHECKPOINT_SIGNING_KEY": "projects/p/locations/asia-east1/keyRings/r/cryptoKeys/c/cryptoKeyVersions/1",
}


def test_production_without_emulators_starts():
    cfg = load_settings({"ENVIRONMENT": "production", **DEPLOYED, **PRODUCTION_SECRETS})
    assert cfg.is_production
    assert not cfg.uses_emulators
    assert cfg.smtp_security == "starttls"


def test_mail_in_clear_only_on_the_local_stack():
    with pytest.raises(ConfigurationError, match="clear"):
        load_settings({"ENVIRONMENT": "staging", "SMTP_SECURITY": "none"})
    assert load_settings({"ENVIRONMENT": "local", "SMTP_SECURITY": "none"}).smtp_security == "none"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENVIRONMENT": "prod"}, "ENVIRONMENT"),
        ({"SMTP_PORT": "twenty-five"}, "SMTP_PORT"),
        ({"SMTP_SECURITY": "ssl3"}, "SMTP_SECURITY"),
        ({"SMTP_PORT": "0"}, "SMTP_PORT"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"MAX_EVENT_AGE_SECONDS": "0"}, "MAX_EVENT_AGE_SECONDS"),
        ({"SNAPSHOT_MAX_AGE_HOURS": "-1"}, "SNAPSHOT_MAX_AGE_HOURS"),
        ({"TERMINATION_MAX_DAYS_AHEAD": "0"}, "TERMINATION_MAX_DAYS_AHEAD"),
        ({"TERMINATION_REAUTH_SECONDS": "-300"}, "TERMINATION_REAUTH_SECONDS"),
        ({"COMPANY_TERMINATION_NOTICE_DAYS": "0"}, "COMPANY_TERMINATION_NOTICE_DAYS"),
        ({"EXPORT_VALID_DAYS": "0"}, "EXPORT_VALID_DAYS"),
        ({"INCIDENT_WARN_MINUTES": "-60"}, "INCIDENT_WARN_MINUTES"),
        ({"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS"),
        ({"FACEBOOK_TIMEOUT_SECONDS": "soon"}, "FACEBOOK_TIMEOUT_SECONDS"),
        ({"FACEBOOK_TIMEOUT_SECONDS": "nan"}, "FACEBOOK_TIMEOUT_SECONDS"),
        ({"FACEBOOK_TIMEOUT_SECONDS": "0"}, "FACEBOOK_TIMEOUT_SECONDS"),
    ],
)
def test_invalid_values_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


def test_buckets_default_to_project_scoped_names():
    cfg = load_settings({"GOOGLE_CLOUD_PROJECT": "acme"})
    assert cfg.backups_bucket == "acme-backups"
    assert load_settings({"GOOGLE_CLOUD_PROJECT": "acme", "BACKUPS_BUCKET": "b"}).backups_bucket == "b"


def test_production_refuses_a_missing_or_short_secret():
    # Each function mounts only its own secrets: a missing one fails where it is used.
    cfg = load_settings({"ENVIRONMENT": "production", **DEPLOYED})
    with pytest.raises(ConfigurationError, match="PSEUDONYM_KEY"):
        _ = cfg.pseudonym_key
    with pytest.raises(ConfigurationError, match="API_KEY_PEPPER"):
        cfg.secret("API_KEY_PEPPER")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_settings({"ENVIRONMENT": "production", **DEPLOYED, "PSEUDONYM_KEY": "short"})
    cfg = load_settings({"ENVIRONMENT": "production", **DEPLOYED, "PSEUDONYM_KEY": "p" * 32})
    assert cfg.pseudonym_key == b"p" * 32
    assert load_settings({"ENVIRONMENT": "test"}).pseudonym_key.startswith(b"local-only")


def test_fault_points_are_off_by_default_and_refused_in_production():
    assert not load_settings({}).fault_points
    assert load_settings({"FAULT_POINTS": "on"}).fault_points
    with pytest.raises(ConfigurationError, match="FAULT_POINTS"):
        load_settings({"ENVIRONMENT": "production", "FAULT_POINTS": "on", **PRODUCTION_SECRETS})


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_intake_lease_must_be_positive(value):
    with pytest.raises(ConfigurationError, match="INCIDENT_INTAKE_LEASE_SECONDS"):
        load_settings({"INCIDENT_INTAKE_LEASE_SECONDS": value})


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("variable", sorted(DEPLOYED))
def test_a_deployed_function_refuses_to_start_on_a_local_default(environment, variable):
    """The Auth emulator takes any Web API key, and links to localhost reach nobody."""
    env = {"ENVIRONMENT": environment, **DEPLOYED}
    del env[variable]
    with pytest.raises(ConfigurationError, match=variable):
        load_settings(env)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings({**env, variable: " "})
    assert load_settings({"ENVIRONMENT": "local"}).firebase_web_api_key == "local-emulator-key"


@pytest.mark.parametrize("raw", ["critical=24/1", "critical=1", "critical=a/b", "=1/2"])
def test_bad_incident_deadlines_are_refused_at_start_up(raw):
    with pytest.raises(ConfigurationError, match="INCIDENT_DEADLINES"):
        load_settings({"INCIDENT_DEADLINES": raw})


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '["backups"]',
        '{"backups": {"key": "my-key", "rotation_period": "7776000s"}}',
        '{"backups": {"key": "projects/p/locations/asia-east1/keyRings/r/cryptoKeys/k"}}',
        '{"firestore": {"managed_by": "someone"}}',
    ],
)
def test_encryption_at_rest_that_is_not_a_key_and_its_rotation_stops_the_start(raw):
    with pytest.raises(ConfigurationError, match="ENCRYPTION_AT_REST"):
        load_settings({"ENCRYPTION_AT_REST": raw})


def test_encryption_at_rest_as_terraform_writes_it_is_read():
    key = "projects/p/locations/asia-east1/keyRings/orderpally-data/cryptoKeys/orderpally-backups"
    raw = f'{{"firestore": {{"managed_by": "google"}}, "backups": {{"key": "{key}", "rotation_period": "7776000s"}}}}'
    cfg = load_settings({"ENCRYPTION_AT_REST": raw})
    assert cfg.encryption_at_rest["backups"] == {"key": key, "rotation_period": "7776000s"}
    assert cfg.encryption_at_rest["firestore"] == {"managed_by": "google"}
    assert load_settings({}).encryption_at_rest == {}


def test_a_checkpoint_signing_key_that_is_not_a_key_version_stops_the_start():
    with pytest.raises(ConfigurationError, match="CHECKPOINT_SIGNING_KEY"):
        load_settings({"CHECKPOINT_SIGNING_KEY": "projects/p/locations/asia-east1/keyRings/r/cryptoKeys/k"})


def test_cloud_kms_is_reached_over_https_outside_the_local_stack():
    local = {"CLOUDKMS_BASE_URL": "http://127.0.0.1:8701/", "ENVIRONMENT": "test"}
    assert load_settings(local).cloudkms_base_url == "http://127.0.0.1:8701"
    with pytest.raises(ConfigurationError, match="CLOUDKMS_BASE_URL"):
        load_settings({"CLOUDKMS_BASE_URL": "http://kms.example", "ENVIRONMENT": "production"})

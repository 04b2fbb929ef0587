"""Transport security, location policy, monitoring and audit logs (agreement 5.3, 5.6, 5.9, 5.10)."""

from __future__ import annotations


def test_the_load_balancer_allows_tls_1_2_or_newer_only(terraform):
    policy = terraform.resource("google_compute_ssl_policy", "tls12")
    assert policy["min_tls_version"] == "TLS_1_2"
    assert terraform.variables["ssl_profile"]["default"] in ("MODERN", "RESTRICTED")
    assert '["MODERN", "RESTRICTED"]' in terraform.variables["ssl_profile"]["validation"][0]["condition"]
    proxy = terraform.resource("google_compute_target_https_proxy", "api")
    assert proxy["ssl_policy"] == "google_compute_ssl_policy.tls12.id"


def test_plain_http_only_redirects_to_https(terraform):
    redirect = terraform.resource("google_compute_url_map", "redirect")
    assert terraform.block(redirect, "default_url_redirect")["https_redirect"] is True
    http_rule = terraform.resource("google_compute_global_forwarding_rule", "http")
    assert http_rule["target"] == "google_compute_target_http_proxy.redirect.id"
    assert "backend" not in str(terraform.resource("google_compute_target_http_proxy", "redirect"))


def test_each_http_function_is_routed_by_its_catalogue_prefix(terraform):
    neg = terraform.resource("google_compute_region_network_endpoint_group", "function")
    assert neg["for_each"] == "local.http_functions"
    assert neg["network_endpoint_type"] == "SERVERLESS"
    matcher = terraform.block(terraform.resource("google_compute_url_map", "api"), "path_matcher")
    rule = matcher["dynamic"][0]["path_rule"]
    assert rule["for_each"] == "local.http_functions"
    assert "path_rule.value.trigger.path_prefix" in rule["content"][0]["paths"][0]


def test_every_backend_is_behind_cloud_armor_with_rate_limits_for_sign_in_and_intake(terraform):
    backend = terraform.resource("google_compute_backend_service", "function")
    assert backend["security_policy"] == "google_compute_security_policy.edge.id"
    limits = terraform.variables["rate_limits"]["default"]
    assert {"sign-in", "intake"} <= set(limits)
    throttle = terraform.resource("google_compute_security_policy", "edge")["dynamic"][0]["rule"]
    assert throttle["content"][0]["action"] == "throttle"
    assert terraform.block(throttle["content"][0], "rate_limit_options")["exceed_action"] == "deny(429)"


def test_resource_locations_are_limited_to_taiwan_when_an_organization_is_given(terraform):
    policy = terraform.resource("google_org_policy_policy", "resource_locations")
    assert "gcp.resourceLocations" in policy["name"]
    values = terraform.block(terraform.block(terraform.block(policy, "spec"), "rules"), "values")
    assert values["allowed_values"] == ["in:asia-east1-locations"]


def test_uptime_check_and_alerts_cover_errors_dead_letters_backups_deadlines_and_every_schedule(terraform):
    uptime = terraform.resource("google_monitoring_uptime_check_config", "health")
    assert terraform.block(uptime, "http_check")["use_ssl"] is True
    policies = terraform.of_type("google_monitoring_alert_policy")
    assert {"uptime", "function_errors", "dead_letters", "log_alert", "scheduler_failure"} <= set(policies)
    assert policies["scheduler_failure"]["for_each"] == "local.schedule_functions"
    alerts = terraform.files["monitoring.tf"]["locals"][0]["log_alerts"]
    assert {"backup-verification-failed", "incident-deadline"} <= set(alerts)


def test_every_alert_the_code_logs_has_a_log_alert(terraform):
    import re
    from pathlib import Path

    import orderpally

    source = Path(orderpally.__file__).parent
    logged = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r'^ALERT_\w+ = "([a-z-]+)"', path.read_text(), flags=re.MULTILINE)
        if name != "alert"  # the key, not a name
    }
    assert logged
    assert logged <= set(terraform.files["monitoring.tf"]["locals"][0]["log_alerts"])


def test_the_backup_alert_name_matches_what_the_verification_function_logs(terraform):
    from orderpally.backups import service

    assert service.ALERT_BACKUP in terraform.files["monitoring.tf"]["locals"][0]["log_alerts"]
    assert service.ALERT_KEY == "alert"


def test_firestore_data_access_is_audited_into_a_locked_bucket_in_taiwan(terraform):
    audit = terraform.resource("google_project_iam_audit_config", "data_access")
    assert "datastore.googleapis.com" in audit["for_each"]
    kinds = {c["log_type"] for c in audit["audit_log_config"]}
    assert kinds == {"ADMIN_READ", "DATA_READ", "DATA_WRITE"}
    bucket = terraform.resource("google_logging_project_bucket_config", "audit")
    assert bucket["locked"] is True
    assert bucket["location"] == "var.region"
    assert terraform.variables["audit_log_retention_days"]["default"] >= 365
    sink = terraform.resource("google_logging_project_sink", "audit")
    assert "cloudaudit.googleapis.com" in sink["filter"]


def test_secrets_are_replicated_only_in_taiwan_and_mounted_per_function(terraform):
    secret = terraform.resource("google_secret_manager_secret", "secret")
    replicas = terraform.block(terraform.block(terraform.block(secret, "replication"), "user_managed"), "replicas")
    assert replicas["location"] == "var.region"
    access = terraform.resource("google_secret_manager_secret_iam_member", "function")
    assert access["for_each"] == "local.secret_grants"
    assert access["role"] == "roles/secretmanager.secretAccessor"

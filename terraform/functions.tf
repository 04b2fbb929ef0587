locals {
  snapshot_job = "projects/${var.project_id}/locations/${var.region}/jobs/orderpally-firestore-snapshot"

  common_env = {
    ENVIRONMENT            = var.environment
    GOOGLE_CLOUD_PROJECT   = var.project_id
    REGION                 = var.region
    SERVICE_VERSION        = substr(data.archive_file.functions.output_sha256, 0, 12)
    FRONTEND_ORIGINS       = join(",", var.frontend_origins)
    MAIL_FROM              = var.mail_from
    PUBLIC_BASE_URL        = "https://${var.domain}"
    FIREBASE_WEB_API_KEY   = google_apikeys_key.identity_toolkit.key_string
    FACEBOOK_APP_ID        = var.facebook_app_id
    SECURITY_ONCALL_EMAIL  = var.alert_email
    SECURITY_CONTACT_EMAIL = var.security_contact_email
    INCIDENT_DEADLINES     = var.incident_deadlines
    SMTP_HOST              = var.smtp_host
    SMTP_PORT              = tostring(var.smtp_port)
    SMTP_SECURITY          = var.smtp_port == 465 ? "tls" : "starttls"
    SMTP_USERNAME          = var.smtp_username
    BACKUPS_BUCKET         = google_storage_bucket.data["backups"].name
    EXPORTS_BUCKET         = google_storage_bucket.data["exports"].name
    ATTACHMENTS_BUCKET     = google_storage_bucket.data["attachments"].name
    SNAPSHOT_SCHEDULER_JOB = local.snapshot_job
    SNAPSHOT_MAX_AGE_HOURS = tostring(var.snapshot_max_age_hours)
    # What the trust report says about retention and keys: read from the resources themselves.
    BACKUP_RETENTION_DAYS  = tostring(var.backup_retention_days)
    CHECKPOINT_SIGNING_KEY = data.google_kms_crypto_key_version.checkpoints.name
    ENCRYPTION_AT_REST = jsonencode(merge(
      { firestore = { managed_by = "google" } },
      { for name in ["backups", "exports", "attachments"] : name => {
        key             = google_kms_crypto_key.buckets[name].id
        rotation_period = google_kms_crypto_key.buckets[name].rotation_period
      } },
    ))
  }
}

resource "google_cloudfunctions2_function" "function" {
  for_each = local.functions

  name        = "orderpally-${each.key}"
  location    = var.region
  description = try(each.value.description, "")
  labels      = local.labels

  build_config {
    runtime         = each.value.runtime
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id
    # Images go to our own repository, the only one the build account may write to.
    docker_repository = google_artifact_registry_repository.functions.id
    # Topic-triggered functions are CloudEvent functions behind our own push
    # subscriptions (with dead-letter topics), not Eventarc triggers.
    environment_variables = {
      GOOGLE_FUNCTION_SIGNATURE_TYPE = each.value.trigger.kind == "topic" ? "cloudevent" : "http"
    }

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.functions.name
      }
    }
  }

  service_config {
    available_memory               = each.value.memory
    timeout_seconds                = each.value.timeout_seconds
    max_instance_count             = each.value.max_instances
    service_account_email          = google_service_account.function[each.key].email
    all_traffic_on_latest_revision = true
    ingress_settings               = each.value.trigger.kind == "http" ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_INTERNAL_ONLY"
    environment_variables = merge(
      local.common_env,
      each.value.trigger.kind == "topic" ? { MAX_EVENT_AGE_SECONDS = tostring(try(each.value.trigger.max_event_age_seconds, 3600)) } : {},
      # A client waits: a streamed Firestore read stuck on a silent connection ends in time for a 503.
      each.value.trigger.kind == "http" ? { FIRESTORE_STREAM_DEADLINE_SECONDS = tostring(min(20, floor(each.value.timeout_seconds / 2))) } : {},
    )

    dynamic "secret_environment_variables" {
      for_each = local.mounted_secrets[each.key]
      content {
        key        = upper(replace(secret_environment_variables.value, "-", "_"))
        project_id = var.project_id
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  # The build runs as google_service_account.build, and the service mounts `latest` of each
  # secret: both must be in place (and the grants propagated) before the first deploy.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.function,
    google_secret_manager_secret_version.generated,
    google_secret_manager_secret_version.provided,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_artifact_registry_repository_iam_member.build_writes_images,
  ]
}

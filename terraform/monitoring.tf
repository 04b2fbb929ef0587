# Agreement 5.6 and 5.9: watch the public endpoints, the functions, the dead
# letters, the backups and the incident deadlines, and tell a person.

resource "google_monitoring_notification_channel" "oncall" {
  display_name = "OrderPally on-call"
  type         = "email"

  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_uptime_check_config" "health" {
  display_name = "orderpally /health"
  timeout      = "10s"
  period       = "60s"

  http_check {
    path         = "/health"
    port         = 443
    use_ssl      = true
    validate_ssl = true
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = var.domain
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "uptime" {
  display_name          = "Public API unreachable"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.oncall.id]

  conditions {
    display_name = "uptime check failing"
    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type=\"uptime_url\" AND metric.label.check_id=\"${google_monitoring_uptime_check_config.health.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
    }
  }
}

resource "google_monitoring_alert_policy" "function_errors" {
  display_name          = "Function 5xx rate"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.oncall.id]

  conditions {
    display_name = "5xx responses from any function"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND metric.label.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = 5
      duration        = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "Dead letters waiting"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.oncall.id]

  conditions {
    display_name = "messages in a dead-letter subscription"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=ends_with(\"-dead-letter-inspect\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "60s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

# Functions log `"alert": "<name>"` at ERROR when a promise is at risk; each name is an alert
# that matches the log entries themselves. (A log-based metric would be created in the same
# apply as its alert, which then fails with "Cannot find metric(s)" until the metric propagates.)
locals {
  log_alerts = {
    backup-verification-failed = "Backups: newest snapshot missing, stale or incomplete, or its schedule disabled"
    incident-deadline          = "Security incident past or near its response deadline"
    audit-chain-broken         = "An account's audit trail no longer verifies: an entry was changed or removed"
    audit-chain-vanished       = "An audit chain committed to a signed checkpoint is gone without a deletion: its head and entries were removed"
    staged-email-unreadable    = "A staged notice email cannot be read back, so the redrive cannot send it"
    smtp-tls-unavailable       = "The mail relay offers no TLS: notice emails wait for redelivery"
    identity-misconfigured     = "Identity Platform refuses the service's API key or configuration: nobody can sign in"
    billing-sequence-gap       = "Billing events wait behind a missing sequence number for over 30 minutes: replay it (exports are refused meanwhile)"
  }
}

resource "google_monitoring_alert_policy" "log_alert" {
  for_each = local.log_alerts

  display_name          = each.value
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.oncall.id]

  conditions {
    display_name = each.key
    condition_matched_log {
      filter = "resource.type=\"cloud_run_revision\" AND jsonPayload.alert=\"${each.key}\" AND severity>=ERROR"
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }

  depends_on = [google_project_service.apis]
}

# Every scheduled function: an alert when its Cloud Scheduler job fails.
resource "google_monitoring_alert_policy" "scheduler_failure" {
  for_each = local.schedule_functions

  display_name          = "Scheduled function failed: ${each.key}"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.oncall.id]

  conditions {
    display_name = "${each.key} job failed"
    condition_matched_log {
      filter = "resource.type=\"cloud_scheduler_job\" AND resource.labels.job_id=\"${google_cloud_scheduler_job.job[each.key].name}\" AND severity>=ERROR"
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "job" {
  for_each = local.schedule_functions

  name             = "orderpally-${each.key}"
  region           = var.region
  description      = try(each.value.description, "")
  schedule         = each.value.trigger.cron
  time_zone        = each.value.trigger.time_zone
  attempt_deadline = "${min(1800, each.value.timeout_seconds + 30)}s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.function[each.key].service_config[0].uri}/"
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler_invoker.email
      audience              = google_cloudfunctions2_function.function[each.key].service_config[0].uri
    }
  }

  depends_on = [google_project_service.apis]
}

# Agreement 5.10: the project's logs are stored in Taiwan. The built-in _Default log bucket is
# global and cannot be moved, so the built-in _Default sink is pointed at a regional bucket
# instead. (The _Required bucket, audit activity logs, stays global: README.)
resource "google_logging_project_bucket_config" "default" {
  project        = var.project_id
  location       = var.region
  bucket_id      = "orderpally-default"
  retention_days = 30
  description    = "What the _Default sink routes, stored in Taiwan."

  depends_on = [google_project_service.apis]
}

# Terraform takes over the existing _Default sink (it cannot be created or deleted; destroying
# this resource leaves the sink as it is). Exclusions here apply to every log the project keeps
# outside the audit buckets, so request logs of URLs that carry a secret are dropped: mailed
# links carry tokens in their query (incident status and confirmation, Facebook linking), the
# OAuth callback a one-time code. Cloud Logging cannot redact a query, and both the load
# balancer and Cloud Run log the full URL; the functions' own logs record those requests
# without their secrets.
resource "google_logging_project_sink" "default" {
  name                   = "_Default"
  description            = "Everything except the _Required sink's audit logs, into the regional bucket."
  destination            = "logging.googleapis.com/${google_logging_project_bucket_config.default.id}"
  filter                 = "NOT LOG_ID(\"cloudaudit.googleapis.com/activity\") AND NOT LOG_ID(\"externalaudit.googleapis.com/activity\") AND NOT LOG_ID(\"cloudaudit.googleapis.com/system_event\") AND NOT LOG_ID(\"externalaudit.googleapis.com/system_event\") AND NOT LOG_ID(\"cloudaudit.googleapis.com/access_transparency\") AND NOT LOG_ID(\"externalaudit.googleapis.com/access_transparency\")"
  unique_writer_identity = true

  exclusions {
    name        = "orderpally-secret-urls"
    description = "Request logs (load balancer and Cloud Run) whose URL carries a secret token or code."
    filter      = "(resource.type=\"http_load_balancer\" OR resource.type=\"cloud_run_revision\") AND httpRequest.requestUrl=~\"[?&](token|code)=\""
  }

  depends_on = [google_project_service.apis]
}

# Agreement 5.6 and 5.8: who read or changed customer data is recorded, and the
# record is kept in Taiwan in a bucket nobody can shorten or empty.
resource "google_project_iam_audit_config" "data_access" {
  for_each = toset(["datastore.googleapis.com", "storage.googleapis.com", "secretmanager.googleapis.com"])

  project = var.project_id
  service = each.value

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_project_bucket_config" "audit" {
  project        = var.project_id
  location       = var.region
  bucket_id      = "orderpally-audit"
  retention_days = var.audit_log_retention_days
  locked         = true
  description    = "Cloud Audit Logs of the OrderPally project, locked."

  depends_on = [google_project_service.apis]
}

resource "google_logging_project_sink" "audit" {
  name                   = "orderpally-audit"
  destination            = "logging.googleapis.com/${google_logging_project_bucket_config.audit.id}"
  filter                 = "logName:\"cloudaudit.googleapis.com\""
  unique_writer_identity = true

  depends_on = [google_project_service.apis]
}

locals {
  data_buckets = {
    # Firestore snapshots (5.4): kept at least 7 days by a retention policy, deleted after backup_retention_days.
    backups = { retention_days = var.backup_retention_days, locked = var.lock_backup_retention, delete_after_days = var.backup_retention_days }
    # Content exports (3.2(b)(ii)): download links expire; the archives follow.
    exports = { retention_days = 0, locked = false, delete_after_days = 14 }
    # Incident report attachments (5.7): removed with the account by the deletion job.
    attachments = { retention_days = 0, locked = false, delete_after_days = 0 }
  }
}

resource "google_storage_bucket" "data" {
  for_each = local.data_buckets
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (Data Access for Cloud Storage), routed to the locked log bucket.
  #checkov:skip=CKV_GCP_78:Versioning would keep deleted customer content beyond the deletion promise (3.2); retention and backups cover loss.

  name                        = "${var.project_id}-${each.key}"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.buckets[each.key].id
  }

  # No snapshot can be removed before its retention period ends.
  dynamic "retention_policy" {
    for_each = each.value.retention_days > 0 ? [each.value] : []
    content {
      retention_period = retention_policy.value.retention_days * 86400
      is_locked        = retention_policy.value.locked
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.delete_after_days > 0 ? [each.value] : []
    content {
      condition {
        age = lifecycle_rule.value.delete_after_days
      }
      action {
        type = "Delete"
      }
    }
  }

  soft_delete_policy {
    retention_duration_seconds = 0 # deleted customer content must not linger (3.2); snapshots have their own retention
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs_uses_bucket_keys]
}

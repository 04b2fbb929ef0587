# One bundle for every function. Its object name carries the content hash, so a
# code change uploads a new object and every function redeploys from it.
data "archive_file" "functions" {
  type        = "zip"
  source_dir  = var.source_dir
  output_path = "${path.module}/.build/functions.zip"
  excludes    = ["**/__pycache__/**", "**/*.pyc", ".pytest_cache/**"]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:The bucket holds only the deployable source; Cloud Audit Logs record access.
  name                        = "${var.project_id}-functions-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.buckets["source"].id
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs_uses_bucket_keys]
}

resource "google_storage_bucket_object" "functions" {
  name   = "functions-${data.archive_file.functions.output_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.functions.output_path
}

# Customer-managed keys for the buckets that hold customer data at rest (5.3, 5.4).
resource "google_kms_key_ring" "data" {
  name     = "orderpally-data"
  location = var.region

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "buckets" {
  for_each = toset(["backups", "exports", "attachments", "source"])

  name            = "orderpally-${each.key}"
  key_ring        = google_kms_key_ring.data.id
  rotation_period = "7776000s" # 90 days
  labels          = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key_iam_member" "gcs_uses_bucket_keys" {
  for_each = google_kms_crypto_key.buckets

  crypto_key_id = each.value.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Pub/Sub messages carry addresses, mailed links and personal data (notice-email above all):
# every topic, dead letters included, is encrypted with this key (pubsub.tf).
resource "google_kms_crypto_key" "pubsub" {
  name            = "orderpally-pubsub"
  key_ring        = google_kms_key_ring.data.id
  rotation_period = "7776000s" # 90 days
  labels          = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "pubsub_uses_topic_key" {
  crypto_key_id = google_kms_crypto_key.pubsub.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent

  depends_on = [google_project_service.apis] # the agent exists once Pub/Sub is enabled
}

# Signs the audit checkpoints customers verify (tools/orderpally_verify). Asymmetric, so the
# public key can be published; the private key never leaves Cloud KMS. Not rotated: a new
# version is a new key id in every later checkpoint, and verifiers must be told of it.
resource "google_kms_crypto_key" "checkpoints" {
  name     = "orderpally-checkpoints"
  key_ring = google_kms_key_ring.data.id
  purpose  = "ASYMMETRIC_SIGN"
  labels   = local.labels

  version_template {
    algorithm        = "EC_SIGN_P256_SHA256"
    protection_level = var.checkpoint_key_protection
  }

  lifecycle {
    prevent_destroy = true
  }
}

data "google_kms_crypto_key_version" "checkpoints" {
  crypto_key = google_kms_crypto_key.checkpoints.id
}

resource "google_kms_crypto_key_iam_member" "function" {
  for_each = local.key_grants

  crypto_key_id = google_kms_crypto_key.checkpoints.id
  role          = each.value.role
  member        = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

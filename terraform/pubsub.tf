data "google_project" "this" {}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "topic" {
  for_each = local.topics

  name                       = each.value
  labels                     = local.labels
  message_retention_duration = "604800s"
  kms_key_name               = google_kms_crypto_key.pubsub.id

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_uses_topic_key]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.topics

  name         = "${each.value}-dead-letter"
  labels       = local.labels
  kms_key_name = google_kms_crypto_key.pubsub.id

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_uses_topic_key]
}

# Dead letters are kept for inspection and replay.
resource "google_pubsub_subscription" "dead_letter_inspect" {
  for_each = local.topics

  name                       = "${each.value}-dead-letter-inspect"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  message_retention_duration = "604800s"
  retain_acked_messages      = true
  ack_deadline_seconds       = 60
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# Each topic-triggered function is pushed to with OIDC; failures are retried
# with backoff and, after the catalogue's attempts, dead-lettered.
resource "google_pubsub_subscription" "push" {
  for_each = local.topic_functions

  name                 = "${each.key}-push"
  topic                = google_pubsub_topic.topic[each.value.trigger.topic].id
  ack_deadline_seconds = min(600, max(10, each.value.timeout_seconds))
  labels               = local.labels

  push_config {
    # The path gives functions-framework a realistic CloudEvent source.
    push_endpoint = "${google_cloudfunctions2_function.function[each.key].service_config[0].uri}/projects/${var.project_id}/topics/${each.value.trigger.topic}"

    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = google_cloudfunctions2_function.function[each.key].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.trigger.topic].id
    max_delivery_attempts = try(each.value.trigger.max_delivery_attempts, 10)
  }

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent signs push requests and moves dead letters.
resource "google_service_account_iam_member" "pubsub_signs_push" {
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  # the agent exists once Pub/Sub is enabled
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = local.topics

  topic  = google_pubsub_topic.dead_letter[each.key].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_forwards_dead_letters" {
  for_each = local.topic_functions

  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

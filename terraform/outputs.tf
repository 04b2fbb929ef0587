output "function_uris" {
  description = "The run.app URI of each function (public ones are meant to be reached through the load balancer)."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.service_config[0].uri }
}

output "topics" {
  description = "Each topic with its dead-letter topic."
  value       = { for t in local.topics : t => google_pubsub_topic.dead_letter[t].name }
}

output "function_service_accounts" {
  description = "The service account of each function."
  value       = { for name, sa in google_service_account.function : name => sa.email }
}

output "buckets" {
  description = "The data buckets (CMEK, asia-east1)."
  value       = { for name, b in google_storage_bucket.data : name => b.url }
}

output "source_object" {
  description = "The bundle the functions run, named by its content hash."
  value       = google_storage_bucket_object.functions.name
}

output "load_balancer_ip" {
  description = "The HTTPS load balancer's address: point the domain's A record here (the managed certificate is issued once it resolves)."
  value       = google_compute_global_address.api.address
}

output "checkpoint_public_key_pem" {
  description = "The public key audit checkpoints are signed with: publish it where customers find it apart from the service (tools/orderpally_verify --public-key)."
  value       = data.google_kms_crypto_key_version.checkpoints.public_key[0].pem
}

locals {
  # Every function writes logs and metrics and uses Firestore.
  baseline_roles = ["roles/datastore.user", "roles/logging.logWriter", "roles/monitoring.metricWriter"]

  baseline_grants = {
    for pair in setproduct(keys(local.functions), local.baseline_roles) :
    "${pair[0]}|${pair[1]}" => { function = pair[0], role = pair[1] }
  }

  # Catalogue grants, parsed: "project:<role>", "topic:<topic>:<role>", "bucket:<bucket>:<role>",
  # "self:<role>" (on the function's own service account, e.g. to sign Firebase custom tokens),
  # "key:checkpoints:<role>" (on the audit checkpoints' signing key, kms.tf).
  catalogue_grants = merge([
    for name, f in local.functions : {
      for grant in try(f.grants, []) : "${name}|${grant}" => {
        function = name
        scope    = split(":", grant)[0]
        target   = length(split(":", grant)) == 3 ? split(":", grant)[1] : null
        role     = element(split(":", grant), length(split(":", grant)) - 1)
      }
    }
  ]...)

  project_grants = merge(local.baseline_grants, { for k, g in local.catalogue_grants : k => g if g.scope == "project" })
  topic_grants   = { for k, g in local.catalogue_grants : k => g if g.scope == "topic" }
  bucket_grants  = { for k, g in local.catalogue_grants : k => g if g.scope == "bucket" }
  self_grants    = { for k, g in local.catalogue_grants : k => g if g.scope == "self" }
  key_grants     = { for k, g in local.catalogue_grants : k => g if g.scope == "key" }

  secret_grants = merge([
    for name, secrets in local.mounted_secrets : { for secret in secrets : "${name}|${secret}" => { function = name, secret = secret } }
  ]...)
}

resource "google_project_iam_member" "function" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.function[each.value.function].email}"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "function" {
  for_each = local.topic_grants

  topic  = google_pubsub_topic.topic[each.value.target].id
  role   = each.value.role
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_storage_bucket_iam_member" "function" {
  for_each = local.bucket_grants

  bucket = google_storage_bucket.data[each.value.target].name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_service_account_iam_member" "function_self" {
  for_each = local.self_grants

  service_account_id = google_service_account.function[each.value.function].name
  role               = each.value.role
  member             = "serviceAccount:${google_service_account.function[each.value.function].email}"

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "function" {
  for_each = local.secret_grants

  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# The function-build account writes build logs project-wide, and reads and writes only what it
# builds from and into: the source bucket and the functions' image repository (deploy.tf).
resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.build.email}"

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_writes_images" {
  location   = var.region
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}

# Who may invoke which function: the public API through the load balancer, the
# scheduler its jobs, Pub/Sub push its subscribers; nobody else.
resource "google_cloud_run_service_iam_member" "public_http" {
  for_each = local.http_functions
  #checkov:skip=CKV_GCP_102:The public API is reached through the HTTPS load balancer; each route authenticates its caller itself.

  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_service_iam_member" "scheduler_invokes" {
  for_each = local.schedule_functions

  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler_invoker.email}"
}

resource "google_cloud_run_service_iam_member" "push_invokes" {
  for_each = local.topic_functions

  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push_invoker.email}"
}

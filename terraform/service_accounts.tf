# One identity per function, with only what its catalogue entry grants.
resource "google_service_account" "function" {
  for_each = local.functions

  # Account ids are at most 30 characters.
  account_id   = substr("fn-${each.key}", 0, 30)
  display_name = "OrderPally function ${each.key}"
  description  = try(each.value.description, "")

  depends_on = [google_project_service.apis]
}

# Calls scheduled functions for Cloud Scheduler, with OIDC.
resource "google_service_account" "scheduler_invoker" {
  account_id   = "scheduler-invoker"
  display_name = "Cloud Scheduler caller of scheduled functions"

  depends_on = [google_project_service.apis]
}

# Signs Pub/Sub push requests to topic-triggered functions, with OIDC.
resource "google_service_account" "push_invoker" {
  account_id   = "pubsub-push-invoker"
  display_name = "Pub/Sub push caller of topic-triggered functions"

  depends_on = [google_project_service.apis]
}

# Builds the functions (instead of the default Compute Engine account).
resource "google_service_account" "build" {
  account_id   = "functions-build"
  display_name = "Builds the functions bundle"

  depends_on = [google_project_service.apis]
}

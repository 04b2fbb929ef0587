# Two build identities, kept apart:
#  - google_service_account.build (service_accounts.tf) builds the functions' images: it reads
#    the source bucket and writes this repository, nothing else (iam.tf).
#  - google_service_account.deploy runs Cloud Build (cloudbuild.yaml): tests, plan and apply.

# The functions' images, instead of the auto-created gcf-artifacts repository, so the build
# account's write access is limited to it. Images hold our code, never customer data.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Images hold the deployable code only, no customer data; Google-managed encryption applies.
  repository_id = "orderpally-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "Images of the OrderPally functions, written by the function-build account only."
  labels        = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "deploy" {
  account_id   = "orderpally-deploy"
  display_name = "Cloud Build: tests, plans and applies the OrderPally Terraform"

  depends_on = [google_project_service.apis]
}

locals {
  # Applying this Terraform creates and changes almost everything in the project, so the deploy
  # account needs broad rights: each an administrator of one service it manages, not the
  # project-wide basic roles (editor, owner). It also needs to set the project's IAM policy (the functions'
  # grants, the audit config); that one role is granted by hand (README), so no change to this
  # repository can widen it, and an operator sees that this account can change IAM. Object
  # access is limited to the source and state buckets (below).
  deploy_roles = toset([
    "roles/artifactregistry.admin",
    "roles/cloudbuild.builds.editor",
    "roles/cloudfunctions.admin",
    "roles/cloudkms.admin",
    "roles/cloudscheduler.admin",
    "roles/compute.loadBalancerAdmin",
    "roles/compute.securityAdmin",
    "roles/datastore.owner",
    "roles/firebaserules.admin",
    "roles/iam.roleAdmin",
    "roles/iam.serviceAccountAdmin",
    "roles/identityplatform.admin",
    "roles/logging.configWriter",
    "roles/logging.logWriter",
    "roles/monitoring.alertPolicyEditor",
    "roles/monitoring.notificationChannelEditor",
    "roles/monitoring.uptimeCheckConfigEditor",
    "roles/pubsub.admin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/serviceusage.apiKeysAdmin",
    "roles/serviceusage.serviceUsageAdmin",
  ])
}

resource "google_project_iam_member" "deploy" {
  for_each = local.deploy_roles
  #checkov:skip=CKV_GCP_49:Applying creates the functions' service accounts and the build trigger (serviceAccountAdmin, cloudbuild.builds.editor); it acts as only the accounts it deploys (deploy_acts_as).

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.deploy.email}"

  depends_on = [google_project_service.apis]
}

# It deploys functions, jobs, subscriptions and the trigger as these accounts, and no other.
resource "google_service_account_iam_member" "deploy_acts_as" {
  for_each = merge(
    { for name in keys(local.functions) : "function-${name}" => google_service_account.function[name].name },
    {
      build             = google_service_account.build.name
      scheduler_invoker = google_service_account.scheduler_invoker.name
      push_invoker      = google_service_account.push_invoker.name
      deploy            = google_service_account.deploy.name
    },
  )

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.deploy.email}"
}

# Buckets and their IAM, but no object in them: the deploy account cannot read customer data.
resource "google_project_iam_custom_role" "deploy_storage" {
  role_id     = "orderpallyDeployStorage"
  title       = "OrderPally deploy: buckets without their objects"
  description = "Create and configure buckets and their IAM; no object access."
  permissions = [
    "storage.buckets.create",
    "storage.buckets.delete",
    "storage.buckets.get",
    "storage.buckets.getIamPolicy",
    "storage.buckets.list",
    "storage.buckets.setIamPolicy",
    "storage.buckets.update",
  ]

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "deploy_storage" {
  project = var.project_id
  role    = google_project_iam_custom_role.deploy_storage.name
  member  = "serviceAccount:${google_service_account.deploy.email}"

  depends_on = [google_project_service.apis]
}

# It uploads the bundle, and keeps the Terraform state.
resource "google_storage_bucket_iam_member" "deploy_uploads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.deploy.email}"
}

resource "google_storage_bucket_iam_member" "deploy_keeps_state" {
  count = var.state_bucket == "" ? 0 : 1

  bucket = var.state_bucket
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.deploy.email}"

  depends_on = [google_project_service.apis]
}

# A push to the deployed branch runs cloudbuild.yaml as the deploy account.
resource "google_cloudbuild_trigger" "deploy" {
  count = var.cloudbuild_repository == "" ? 0 : 1

  name            = "orderpally-deploy"
  location        = var.region
  description     = "Tests, audit, checkov, terraform plan and apply of the pushed commit."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.deploy.id

  repository_event_config {
    repository = var.cloudbuild_repository
    push {
      branch = var.cloudbuild_branch
    }
  }

  substitutions = {
    _STATE_BUCKET = var.state_bucket
  }

  depends_on = [google_project_service.apis, google_project_iam_member.deploy]
}

# One container per secret the catalogue names; its first version comes from the same apply (below).
resource "google_secret_manager_secret" "secret" {
  for_each = local.secrets

  secret_id = each.value
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  facebook_sign_in = var.facebook_app_id != ""

  # What a catalogue entry's `secrets_when` may name: such a secret is mounted only while its
  # condition holds, so an unconfigured feature never needs a secret value.
  secret_conditions = {
    always           = true
    facebook_sign_in = local.facebook_sign_in
    smtp_auth        = var.smtp_username != ""
  }

  # The secrets each function mounts (an unknown condition name fails the plan).
  mounted_secrets = {
    for name, f in local.functions : name => toset([
      for s in try(f.secrets, []) : s if local.secret_conditions[try(f.secrets_when[s], "always")]
    ])
  }
  every_mounted_secret = toset(flatten([for s in values(local.mounted_secrets) : tolist(s)]))

  # Keys only this service uses: Terraform makes their first version (below).
  generated_secrets = toset([for s in var.generated_secrets : s if contains(local.secrets, s)])

  # Values that come from elsewhere (Facebook, the mail relay): given to Terraform as sensitive
  # variables, and needed only while the feature that mounts them is configured.
  provided_secret_values = {
    "facebook-app-secret" = var.facebook_app_secret
    "smtp-password"       = var.smtp_password
  }
  provided_secrets = toset([for s in local.every_mounted_secret : s if contains(["facebook-app-secret", "smtp-password"], s)])
}

# A function mounting `latest` of a secret that has no version cannot deploy, so the apply that
# creates a secret also creates its first version. Peppers and pseudonym keys need only be random
# and never leave Google: Terraform has no random provider here, but `uuid()` is drawn from a
# cryptographic source, and two of them give 244 random bits as 64 hex characters. The value is
# generated once (ignore_changes) and is kept in the Terraform state, which is why the state bucket
# is readable by the deploy account and break-glass admins only (README). Rotate by adding a version
# with `gcloud secrets versions add` (see README); a project whose secrets already have versions
# added by hand sets generated_secrets = [] so Terraform adds none that would replace them.
resource "google_secret_manager_secret_version" "generated" {
  for_each = local.generated_secrets

  secret          = google_secret_manager_secret.secret[each.key].id
  secret_data     = "${replace(uuid(), "-", "")}${replace(uuid(), "-", "")}"
  deletion_policy = "ABANDON" # dropping it from Terraform must not destroy the key in use

  lifecycle {
    ignore_changes = [secret_data]
  }
}

resource "google_secret_manager_secret_version" "provided" {
  for_each = local.provided_secrets

  secret      = google_secret_manager_secret.secret[each.key].id
  secret_data = local.provided_secret_values[each.key]

  lifecycle {
    precondition {
      condition     = nonsensitive(local.provided_secret_values[each.key] != "")
      error_message = "${each.key} is mounted (its feature is configured), so its value is needed: set the sensitive variable ${replace(each.key, "-", "_")} (e.g. TF_VAR_${replace(each.key, "-", "_")})."
    }
  }
}

# Sign-in (agreement 5.1, 5.2): Identity Platform holds the credentials. The functions check
# passwords through its REST API with a Web API key that can call Identity Toolkit and nothing else.
resource "google_apikeys_key" "identity_toolkit" {
  name         = "orderpally-identity-toolkit"
  display_name = "OrderPally functions: server-side sign-in (Identity Toolkit only)"

  restrictions {
    api_targets {
      service = "identitytoolkit.googleapis.com"
    }
  }

  depends_on = [google_project_service.apis]
}

# Email and password sign-in on our own domains. Users are created only by the functions (Admin
# SDK, after the password rules and throttling): nobody signs up or deletes an account through the
# client API with the key above. <project>.firebaseapp.com serves the mailed verification and
# password-reset links that the Admin SDK generates.
resource "google_identity_platform_config" "auth" {
  authorized_domains = distinct(concat(
    [var.domain, "${var.project_id}.firebaseapp.com"],
    [for origin in var.frontend_origins : regex("^https?://([^:/]+)", origin)[0]],
  ))

  sign_in {
    allow_duplicate_emails = false

    email {
      enabled           = true
      password_required = true
    }
  }

  client {
    permissions {
      disabled_user_signup   = true
      disabled_user_deletion = true
    }
  }

  depends_on = [google_project_service.apis]
}

# Facebook (5.1), when an app id is configured. The functions run Facebook's code flow themselves
# and sign the user in with a custom token; the provider holds the same app so that Identity
# Platform knows the method and its users' Facebook identities are verified against this app.
resource "google_identity_platform_default_supported_idp_config" "facebook" {
  count = local.facebook_sign_in ? 1 : 0

  idp_id        = "facebook.com"
  client_id     = var.facebook_app_id
  client_secret = var.facebook_app_secret
  enabled       = true

  lifecycle {
    precondition {
      condition     = nonsensitive(var.facebook_app_secret != "")
      error_message = "facebook_app_id is set: set facebook_app_secret too (TF_VAR_facebook_app_secret)."
    }
  }

  depends_on = [google_identity_platform_config.auth]
}

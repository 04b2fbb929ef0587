variable "project_id" {
  description = "The Google Cloud project that runs the service."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project id."
  }
}

variable "region" {
  description = "Region of every regional resource. The agreement (5.10) keeps data in Taiwan: only asia-east1 (Changhua County) is allowed."
  type        = string
  default     = "asia-east1"

  validation {
    condition     = contains(["asia-east1"], var.region)
    error_message = "region must be in Taiwan: asia-east1."
  }
}

variable "environment" {
  description = "Deployment stage; production refuses emulator settings at start-up."
  type        = string
  default     = "production"

  validation {
    condition     = contains(["production", "staging"], var.environment)
    error_message = "environment must be production or staging."
  }
}

variable "catalogue_path" {
  description = "The function catalogue shared with the local stack."
  type        = string
  default     = "../infra/functions.yaml"
}

variable "source_dir" {
  description = "The deployable bundle: functions/ with main.py and requirements.txt."
  type        = string
  default     = "../functions"
}

variable "frontend_origins" {
  description = "HTTPS origins of the frontends; browser requests from anywhere else are refused (CSRF)."
  type        = list(string)

  validation {
    condition     = length(var.frontend_origins) > 0 && alltrue([for o in var.frontend_origins : can(regex("^https://[^/]+$", o))])
    error_message = "frontend_origins must be https origins without a path."
  }
}

variable "mail_from" {
  description = "Sender of customer notices, e.g. OrderPally <no-reply@orderpally.example>."
  type        = string
}

variable "smtp_host" {
  description = "SMTP relay; mail is sent with STARTTLS at TLS 1.2 or newer."
  type        = string
}

variable "facebook_app_id" {
  description = "Facebook app id for Facebook sign-in (its secret is the facebook-app-secret secret); empty disables it."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[0-9]*$", var.facebook_app_id))
    error_message = "facebook_app_id is the numeric app id."
  }
}

variable "facebook_app_secret" {
  description = "Facebook app secret, needed with facebook_app_id: stored as the facebook-app-secret secret and in Identity Platform's facebook.com provider. Pass it as TF_VAR_facebook_app_secret, never in a file."
  type        = string
  default     = ""
  sensitive   = true
}

variable "smtp_password" {
  description = "Password of smtp_username at the relay, needed with smtp_username: stored as the smtp-password secret. Pass it as TF_VAR_smtp_password, never in a file."
  type        = string
  default     = ""
  sensitive   = true
}

variable "generated_secrets" {
  description = "Secrets whose first version Terraform generates (random, once). Set [] where they already have versions added by hand."
  type        = list(string)
  default     = ["api-key-pepper", "pseudonym-key"]

  validation {
    condition     = alltrue([for s in var.generated_secrets : contains(["api-key-pepper", "pseudonym-key"], s)])
    error_message = "only api-key-pepper and pseudonym-key are generated; the others come from their provider."
  }
}

variable "smtp_username" {
  description = "SMTP relay user; its password is the smtp-password secret (empty: the relay takes no login)."
  type        = string
  default     = ""
}

variable "smtp_port" {
  description = "SMTP relay port (587 for STARTTLS, 465 for implicit TLS)."
  type        = number
  default     = 587

  validation {
    condition     = contains([465, 587], var.smtp_port)
    error_message = "smtp_port must be 465 (implicit TLS) or 587 (STARTTLS)."
  }
}

variable "snapshot_max_age_hours" {
  description = "Verification alerts when the newest Firestore snapshot is older than this."
  type        = number
  default     = 26

  validation {
    condition     = var.snapshot_max_age_hours >= 1 && var.snapshot_max_age_hours <= 72
    error_message = "snapshot_max_age_hours must be between 1 and 72."
  }
}

variable "backup_retention_days" {
  description = "Snapshots are deleted after this many days; the agreement (5.4) promises at least 7."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 7
    error_message = "backup_retention_days must be at least 7 (agreement clause 5.4)."
  }
}

variable "lock_backup_retention" {
  description = "Lock the backups bucket's retention policy (irreversible); true for production."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "domain" {
  description = "The public API's domain name; a Google-managed certificate is issued for it."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a DNS name such as api.orderpally.example."
  }
}

variable "ssl_profile" {
  description = "SSL policy profile of the load balancer; both keep TLS 1.2 as the minimum (agreement 5.3)."
  type        = string
  default     = "MODERN"

  validation {
    condition     = contains(["MODERN", "RESTRICTED"], var.ssl_profile)
    error_message = "ssl_profile must be MODERN or RESTRICTED."
  }
}

variable "rate_limits" {
  description = "Cloud Armor per-client-address limits, requests per minute, for abuse-prone paths."
  type = map(object({
    path_prefix         = string
    requests_per_minute = number
  }))
  default = {
    sign-in = { path_prefix = "/auth/", requests_per_minute = 60 }
    intake  = { path_prefix = "/incidents", requests_per_minute = 30 }
  }

  validation {
    condition     = alltrue([for r in values(var.rate_limits) : r.requests_per_minute >= 1 && startswith(r.path_prefix, "/")])
    error_message = "each rate limit needs a path prefix starting with / and at least 1 request per minute."
  }
}

variable "alert_email" {
  description = "Where alerts go (security and operations on-call)."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an email address."
  }
}

variable "organization_id" {
  description = "When set, the gcp.resourceLocations policy is applied to this organization (agreement 5.10)."
  type        = string
  default     = ""
}

variable "folder_id" {
  description = "When set (and no organization_id), the gcp.resourceLocations policy is applied to this folder."
  type        = string
  default     = ""
}

variable "audit_log_retention_days" {
  description = "Retention of the locked audit-log bucket (agreement 5.8 records)."
  type        = number
  default     = 400

  validation {
    condition     = var.audit_log_retention_days >= 365
    error_message = "audit_log_retention_days must be at least 365."
  }
}

variable "security_contact_email" {
  description = "The published security address (security.txt Contact); reports also reach the on-call at alert_email."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.security_contact_email))
    error_message = "security_contact_email must be an email address."
  }
}

variable "incident_deadlines" {
  description = "Hours to first response / resolution per severity, e.g. critical=1/24,high=4/72; empty keeps the defaults."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((critical|high|medium|low)=[0-9]+/[0-9]+(,|$))*$", var.incident_deadlines))
    error_message = "incident_deadlines looks like critical=1/24,high=4/72,medium=24/168,low=72/720."
  }
}

variable "cloudbuild_repository" {
  description = "Cloud Build (2nd gen) repository that deploys on push, projects/<p>/locations/<region>/connections/<c>/repositories/<r>; empty: no trigger."
  type        = string
  default     = ""
}

variable "cloudbuild_branch" {
  description = "Branches (RE2) whose pushes the trigger deploys."
  type        = string
  default     = "^main$"
}

variable "state_bucket" {
  description = "The Terraform state bucket (created by hand, see README): the deploy account's only object access beyond the source bucket."
  type        = string
  default     = ""
}

variable "checkpoint_key_protection" {
  description = "Protection level of the key that signs audit checkpoints: SOFTWARE or HSM (Cloud HSM, billed per key version)."
  type        = string
  default     = "SOFTWARE"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.checkpoint_key_protection)
    error_message = "checkpoint_key_protection must be SOFTWARE or HSM."
  }
}

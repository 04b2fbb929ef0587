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

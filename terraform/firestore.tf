resource "google_firestore_database" "main" {
  name                              = "(default)"
  location_id                       = var.region
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.apis]
}

# A second line behind the scheduled exports (5.4): managed daily backups kept 7 days.
resource "google_firestore_backup_schedule" "daily" {
  database  = google_firestore_database.main.name
  retention = "604800s"

  daily_recurrence {}
}

# Bookkeeping that expires by itself: Firestore deletes a document once its
# `expire_at` has passed. The code sets `expire_at` on every one of these.
locals {
  expiring_collections = toset([
    "event_ledger",      # Pub/Sub deliveries seen, past the redelivery window
    "email_deliveries",  # the delivery ledger, 400 days
    "rate_limits",       # limiter windows
    "revoked_sessions",  # until the cookie would have expired anyway
    "facebook_links",    # mailed link offers, 30 minutes
    "incident_requests", # Idempotency-Keys of incident reports, 2 days
    "audit_link_locks",  # a crashed audit linker's lock
  ])
}

moved {
  from = google_firestore_field.event_ledger_ttl
  to   = google_firestore_field.ttl["event_ledger"]
}

resource "google_firestore_field" "ttl" {
  for_each = local.expiring_collections

  database   = google_firestore_database.main.name
  collection = each.value
  field      = "expire_at"

  ttl_config {}
  index_config {}
}

# Composite indexes the queries need (the emulator needs none, production does).
resource "google_firestore_index" "due_terminations" {
  database   = google_firestore_database.main.name
  collection = "terminations"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "terminate_at"
    order      = "ASCENDING"
  }
}

# The retention purge's reports made without an account, oldest first (lifecycle/deletion.py).
resource "google_firestore_index" "ownerless_incidents" {
  database   = google_firestore_database.main.name
  collection = "incidents"

  fields {
    field_path = "reporter_account_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# An account's breach notices under any incident, and their purge (lifecycle/deletion.py): a
# collection-group query needs its single-field index declared; the collection scope stays.
resource "google_firestore_field" "breach_recipients" {
  for_each = toset(["account_id", "retained_until"])

  database   = google_firestore_database.main.name
  collection = "breach_recipients"
  field      = each.value

  index_config {
    indexes {
      order = "ASCENDING"
    }
    indexes {
      order = "DESCENDING"
    }
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }
}

# The notices feed filtered by kind, newest first (notices/service.py).
resource "google_firestore_index" "notices_by_kind" {
  database   = google_firestore_database.main.name
  collection = "notices"

  fields {
    field_path = "kind"
    order      = "ASCENDING"
  }
  fields {
    field_path = "first_published_at"
    order      = "DESCENDING"
  }
}

# The staff incident list, newest first, filtered by any of state, severity and category
# (incidents/http.py); Firestore merges these for a list filtered by two or three.
resource "google_firestore_index" "incidents_newest" {
  for_each   = toset(["state", "severity", "category"])
  database   = google_firestore_database.main.name
  collection = "incidents"

  fields {
    field_path = each.key
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# No client SDK access at all (clause 5.8: records protected from modification).
resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_firebaserules_release" "firestore" {
  project = var.project_id
  # The (default) database's release is plain `cloud.firestore` (others: cloud.firestore/<db>).
  name         = "cloud.firestore"
  ruleset_name = google_firebaserules_ruleset.firestore.name

  depends_on = [google_firestore_database.main]
}

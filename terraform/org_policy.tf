# Agreement 5.10: resources only in Taiwan. Applied at the organization or
# folder that holds the project, when one is given (it needs org-level rights).
locals {
  location_policy_parent = var.organization_id != "" ? "organizations/${var.organization_id}" : (var.folder_id != "" ? "folders/${var.folder_id}" : "")
}

resource "google_org_policy_policy" "resource_locations" {
  count = local.location_policy_parent == "" ? 0 : 1

  name   = "${local.location_policy_parent}/policies/gcp.resourceLocations"
  parent = local.location_policy_parent

  spec {
    rules {
      values {
        allowed_values = ["in:asia-east1-locations"]
      }
    }
  }

  depends_on = [google_project_service.apis]
}

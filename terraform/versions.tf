terraform {
  required_version = ">= 1.6, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.14.1"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "= 2.7.0"
    }
  }

  # State lives in a GCS bucket named at `terraform init -backend-config=bucket=...`.
  backend "gcs" {
    prefix = "orderpally/customer-service"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# The one HTTPS entrance (agreement 5.3): TLS 1.2 or newer, HTTP redirected,
# each catalogue path prefix routed to its function through a serverless NEG,
# Cloud Armor in front.

resource "google_compute_ssl_policy" "tls12" {
  name            = "orderpally-tls12"
  min_tls_version = "TLS_1_2"
  profile         = var.ssl_profile

  depends_on = [google_project_service.apis]
}

resource "google_compute_region_network_endpoint_group" "function" {
  for_each = local.http_functions

  name                  = "neg-${each.key}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    # service_config[0].service is projects/<p>/locations/<r>/services/<name>; the NEG takes <name>.
    service = reverse(split("/", google_cloudfunctions2_function.function[each.key].service_config[0].service))[0]
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_backend_service" "function" {
  for_each = local.http_functions

  name                  = "backend-${each.key}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = google_compute_security_policy.edge.id

  backend {
    group = google_compute_region_network_endpoint_group.function[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

# Request logs of URLs that carry a secret (mailed links, the OAuth callback's code) are
# excluded from the _Default sink, the load balancer's and Cloud Run's alike: logging.tf.

resource "google_compute_url_map" "api" {
  name = "orderpally-api"
  # Anything outside the catalogue's prefixes reaches the health function's
  # router, which answers 404 problem documents.
  default_service = google_compute_backend_service.function["health"].id

  host_rule {
    hosts        = [var.domain]
    path_matcher = "functions"
  }

  path_matcher {
    name            = "functions"
    default_service = google_compute_backend_service.function["health"].id

    dynamic "path_rule" {
      for_each = local.http_functions
      content {
        paths   = [path_rule.value.trigger.path_prefix, "${trimsuffix(path_rule.value.trigger.path_prefix, "/")}/*"]
        service = google_compute_backend_service.function[path_rule.key].id
      }
    }
  }
}

resource "google_compute_managed_ssl_certificate" "api" {
  name = "orderpally-api"

  managed {
    domains = [var.domain]
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_https_proxy" "api" {
  name             = "orderpally-api"
  url_map          = google_compute_url_map.api.id
  ssl_certificates = [google_compute_managed_ssl_certificate.api.id]
  ssl_policy       = google_compute_ssl_policy.tls12.id
}

resource "google_compute_global_address" "api" {
  name = "orderpally-api"

  depends_on = [google_project_service.apis]
}

resource "google_compute_global_forwarding_rule" "https" {
  name                  = "orderpally-api-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.api.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.api.id
}

resource "google_compute_url_map" "redirect" {
  name = "orderpally-api-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_http_proxy" "redirect" {
  name    = "orderpally-api-redirect"
  url_map = google_compute_url_map.redirect.id

  depends_on = [google_project_service.apis]
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "orderpally-api-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.api.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id

  depends_on = [google_project_service.apis]
}

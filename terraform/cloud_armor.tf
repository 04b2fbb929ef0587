resource "google_compute_security_policy" "edge" {
  name = "orderpally-edge"
  type = "CLOUD_ARMOR"

  # Abuse-prone paths are throttled per client address before any function runs;
  # the functions keep their own per-account limits behind this.
  dynamic "rule" {
    for_each = { for i, name in sort(keys(var.rate_limits)) : name => { priority = 1000 + i, limit = var.rate_limits[name] } }
    content {
      priority    = rule.value.priority
      action      = "throttle"
      description = "rate limit: ${rule.key}"

      match {
        expr {
          expression = "request.path.startsWith('${rule.value.limit.path_prefix}')"
        }
      }

      rate_limit_options {
        conform_action = "allow"
        exceed_action  = "deny(429)"
        enforce_on_key = "IP"

        rate_limit_threshold {
          count        = rule.value.limit.requests_per_minute
          interval_sec = 60
        }
      }
    }
  }

  # Log4j-style exploits (checkov CKV_GCP_73).
  rule {
    priority    = 900
    action      = "deny(403)"
    description = "CVE-2021-44228 and CVE-2021-45046"

    match {
      expr {
        expression = "evaluatePreconfiguredExpr('cve-canary')"
      }
    }
  }

  rule {
    priority    = 2147483647
    action      = "allow"
    description = "default"

    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }

  depends_on = [google_project_service.apis]
}

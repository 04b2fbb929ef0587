locals {
  # The one function catalogue, shared with the local stack (infra/local).
  catalogue_raw = yamldecode(file(var.catalogue_path))
  functions = {
    for name, spec in local.catalogue_raw.functions : name => merge(local.catalogue_raw.defaults, spec)
  }

  http_functions     = { for name, f in local.functions : name => f if f.trigger.kind == "http" }
  topic_functions    = { for name, f in local.functions : name => f if f.trigger.kind == "topic" }
  schedule_functions = { for name, f in local.functions : name => f if f.trigger.kind == "schedule" }

  # Every topic a function subscribes to, plus those functions are granted to publish to.
  topics = toset(concat(
    [for f in values(local.topic_functions) : f.trigger.topic],
    flatten([for f in values(local.functions) : [for g in try(f.grants, []) : split(":", g)[1] if startswith(g, "topic:")]]),
  ))

  # Secret ids used by any function.
  secrets = toset(flatten([for f in values(local.functions) : try(f.secrets, [])]))

  labels = merge(var.labels, { service = "orderpally-customer-service", environment = var.environment })
}

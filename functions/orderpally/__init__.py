"""OrderPally customer-service backend: one folder per capability, shared adapters beside them."""

__version__ = "0.1.0"

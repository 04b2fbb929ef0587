"""Request bodies the HTTP tiers send, valid unless a test overrides a field."""

from __future__ import annotations


def incident_report(**overrides) -> dict:
    return {
        "category": "suspected_data_leak",
        "description": "Orders of my shop appear on a public paste site.",
        "contact_email": "reporter@example.com",
        "language": "en",
        **overrides,
    }

"""Signed public checkpoints over every account's audit-chain head (#18, RFC 9162 style)."""

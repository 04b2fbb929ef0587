"""The account's trust report: what the system holds of a customer, where, for how long, and who looked."""

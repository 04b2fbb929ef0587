"""Database snapshots (agreement 5.4): scheduled Firestore exports kept at least 7 days in Taiwan."""

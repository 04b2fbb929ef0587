"""Archive requests, shared by content exports (lifecycle) and records requests (records):
how many an account may ask for (`rules`, kept by `store`), and one build at a time, streamed
into Storage with its checksum and downloaded by a short-lived link (`service`)."""

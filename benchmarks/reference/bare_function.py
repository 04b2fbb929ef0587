"""The cold-start reference: a minimal functions-framework function doing one Firestore read with a bare client."""

import functions_framework
from google.cloud import firestore

client = firestore.Client()


@functions_framework.http
def bare(request):
    client.collection("ops").document("heartbeat").get()
    return {"ok": True}

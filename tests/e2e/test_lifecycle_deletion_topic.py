"""The deletion function on the running stack, driven through Pub/Sub as production drives it."""

from __future__ import annotations

import time

from orderpally import clients
from orderpally.lifecycle import deletion
from support import pubsub


def wait_for_certificate(account_id: str, timeout: float = 60) -> dict:
    ref = clients.firestore_client().document(f"{deletion.CERTIFICATES}/{account_id}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = ref.get()
        if snap.exists and snap.to_dict()["status"] == "completed":
            return snap.to_dict()
        time.sleep(0.2)
    raise AssertionError("no deletion certificate")


def test_a_published_deletion_runs_once_even_when_published_twice(running_stack):
    db = clients.firestore_client()
    db.document("accounts/dora").set({"kind": "consumer", "email": "dora@example.test"})
    for i in range(30):
        db.collection("accounts/dora/audit_trail").add({"action": f"a{i}"})
    db.document("orders/o1").set(
        {"store_id": "demo-store", "consumer_id": "dora", "consumer_name": "Dora", "amount": 9}
    )
    deletion.request_deletion(db, "dora", "dora", "customer request")

    for _ in range(2):
        pubsub.publisher().publish(deletion.TOPIC, deletion.MESSAGE_TYPE, {"account_id": "dora"})
    certificate = wait_for_certificate("dora")

    assert certificate["locations"]["audit_trail"]["counts"] == {"deleted": 30}
    assert not db.document("accounts/dora").get().exists
    order = db.document("orders/o1").get().to_dict()
    assert order["consumer_name"] is None
    assert order["store_id"] == "demo-store"
    assert order["amount"] == 9

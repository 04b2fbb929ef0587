"""The deletion certificate reaches the customer by the link in their termination notice,
and shows nothing the deletion removed (issue #15, finding 28)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from orderpally import audit, clients
from orderpally.config import settings
from orderpally.lifecycle import certificates, data_map, deletion, service
from orderpally.lifecycle.rules import Basis

pytestmark = pytest.mark.usefixtures("emulators")

UID = "certified-uid-0001"
EMAIL = "carol.certified@example.com"


def test_the_termination_notice_links_to_a_certificate_that_outlives_the_account():
    db = clients.firestore_client()
    db.document(f"accounts/{UID}").set(
        {"status": "active", "email": EMAIL, "display_name": "Carol Certified", "language": "en"}
    )
    db.document("orders/o-1").set({"store_id": UID, "store_name": "Carol's shop", "consumer_id": "x", "amount": 5})
    db.document(f"invoices/{UID}-1").set(
        {"account_id": UID, "billing_email": EMAIL, "billing_name": "Carol Certified", "issued_at": "2026-01-05"}
    )
    sent = []
    effects = service.Effects(
        db=db,
        auth_app=clients.firebase_app(),
        send_email=sent.append,
        publish_deletion=lambda account_id: None,
        public_base_url="https://api.orderpally.example",
    )
    now = datetime.now(UTC)
    service.schedule_termination(
        effects,
        UID,
        basis=Basis.CUSTOMER_CONVENIENCE,
        terminate_at=now,
        actor=audit.Actor("customer", UID),
        reason=None,
        client_address=None,
        now=now,
    )
    [notice] = [m for m in sent if m.template == "account_terminated"]
    link = urlsplit(notice.data["certificate_url"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == "https://api.orderpally.example" + certificates.LINK_PATH
    token = parse_qs(link.query)["token"][0]
    # Only the token's digest is stored.
    stored = [snap.id for snap in db.collection(certificates.LINKS).stream()]
    assert stored == [certificates.token_digest(token)]

    assert certificates.for_token(db, token) == {"status": "pending", "locations": {}}
    ports = deletion.Ports(
        db=db,
        storage=clients.storage_client(),
        buckets={"exports": settings().exports_bucket, "attachments": settings().attachments_bucket},
        pseudonym_key=b"test-pseudonym-key-0123456789abcdef",
        continue_later=lambda account_id: None,
        sleep=lambda seconds: None,
    )
    # The locations this account has content in: the test is about the certificate, not the whole map.
    full = data_map.load()
    wanted = {"account_profile", "audit_trail", "orders_as_store", "invoices"}
    some = full.model_copy(update={"locations": [loc for loc in full.locations if loc.id in wanted]})
    assert deletion.run_job(ports, some, UID) == "completed"
    assert not db.document(f"accounts/{UID}").get().exists

    shown = certificates.for_token(db, token)
    assert shown["status"] == "completed"
    assert shown["locations"]["account_profile"]["counts"] == {"deleted": 1}
    assert shown["locations"]["invoices"]["counts"] == {"pseudonymised": 1}
    text = repr(shown)
    for removed in (UID, EMAIL, "Carol", "carol"):
        assert removed not in text
    # The staff view names the account, and holds nothing personal either.
    staff = repr(certificates.staff_view(UID, service.deletion_certificate(db, UID)))
    assert EMAIL not in staff
    assert "Carol" not in staff
    assert certificates.for_token(db, "not-a-token-but-long-enough") is None

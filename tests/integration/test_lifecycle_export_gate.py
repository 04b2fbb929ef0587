"""The payment gate at build time and the archive limits, against the Firestore emulator."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from orderpally import clients, web
from orderpally.archives import rules as limits
from orderpally.archives import service as archives
from orderpally.archives import store as archive_store
from orderpally.lifecycle import billing
from orderpally.lifecycle import export as content_export

pytestmark = pytest.mark.usefixtures("emulators")


def invoice(account_id: str, sequence: int, amount: int) -> billing.BillingEvent:
    return billing.BillingEvent(
        account_id=account_id,
        sequence=sequence,
        kind="invoice_issued",
        amount=amount,
        reference=f"INV-{sequence}",
        occurred_at=datetime.now(UTC),
    )


def queued_export(db, account_id: str) -> str:
    batch = db.batch()
    record = content_export.create_request(db, account_id, (0, "TWD"), datetime.now(UTC), 7, batch)
    batch.commit()
    return record["export_id"]


def test_an_invoice_arriving_after_the_request_stops_the_build():
    """The attack: ask while nothing is owed, and the invoice lands before the build. Until the
    fix the archive was built (and downloadable) with money owed."""
    db = clients.firestore_client()
    export_id = queued_export(db, "late")
    billing.record_event(db, invoice("late", 1, 900))
    message = content_export.ExportMessage(export_id=export_id, account_id="late")
    # No storage: a refused build must not touch it.
    outcome = content_export.run_export(db, None, {}, None, message, datetime.now(UTC))
    assert outcome == "refused"
    record = db.collection(content_export.EXPORTS).document(export_id).get().to_dict()
    assert record["status"] == "refused"
    assert record["refused"] == {"reason": "payment-required", "outstanding_amount": 900, "currency": "TWD"}
    assert "object" not in record
    assert content_export.run_export(db, None, {}, None, message, datetime.now(UTC)) == "refused"  # redelivery


def test_an_event_waiting_behind_a_gap_stops_the_build():
    db = clients.firestore_client()
    export_id = queued_export(db, "gap")
    with pytest.raises(billing.OutOfOrder):
        billing.record_event(db, invoice("gap", 2, 10))
    message = content_export.ExportMessage(export_id=export_id, account_id="gap")
    assert content_export.run_export(db, None, {}, None, message, datetime.now(UTC)) == "refused"
    refused = db.collection(content_export.EXPORTS).document(export_id).get().to_dict()["refused"]
    assert refused == {"reason": "billing-unsettled"}


def test_an_invoice_concurrent_with_the_request_is_ordered_after_it_and_stops_the_build():
    """The balance is read in the request's transaction: an invoice committed meanwhile waits for
    it (or makes it read again), so a request never commits on a balance already stale; the
    invoice that comes after it is caught by the build."""
    from google.cloud import firestore

    db = clients.firestore_client()
    seen: list[int] = []
    billed = threading.Thread(target=lambda: billing.record_event(db, invoice("racer", 1, 300)))

    @firestore.transactional
    def request(transaction) -> None:
        state = billing.read_state(db, "racer", transaction)
        seen.append(state.outstanding)
        if not billed.is_alive() and len(seen) == 1:
            billed.start()  # the invoice is written while this transaction is open
            time.sleep(0.5)
        content_export.check_settled(state)
        transaction.create(
            db.collection(content_export.EXPORTS).document("x" * 20),
            {"account_id": "racer", "status": "queued", "requested_at": datetime.now(UTC)},
        )

    try:
        request(db.transaction())
        created = True
    except web.Problem as refused:
        if refused.slug != "payment-required":
            raise
        created = False
    billed.join()
    assert billing.outstanding(db, "racer") == (300, "TWD")
    if created:  # the invoice came after the request: the build refuses
        assert seen == [0]
        message = content_export.ExportMessage(export_id="x" * 20, account_id="racer")
        assert content_export.run_export(db, None, {}, None, message, datetime.now(UTC)) == "refused"
    else:  # the invoice came first: the request read it again and was refused
        assert seen[-1] == 300


def _reserve(db, account_id: str, request_id: str, now: datetime) -> None:
    from google.cloud import firestore

    @firestore.transactional
    def write(transaction) -> None:
        archives.reserve(
            transaction, db, account_id, limits.EXPORTS, db.collection(content_export.EXPORTS).document, request_id, now
        )
        transaction.set(
            db.collection(content_export.EXPORTS).document(request_id),
            {"account_id": account_id, "status": "queued", "requested_at": now},
        )

    write(db.transaction())


def test_two_requests_at_once_do_not_both_pass():
    db = clients.firestore_client()
    now = datetime.now(UTC)
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def ask(i: int) -> None:
        start.wait()
        try:
            _reserve(db, "busy", f"{i:020d}", now)
            outcomes.append("accepted")
        except web.Problem as refused:
            outcomes.append("in-progress" if refused.slug == "archive-in-progress" else repr(refused))
        except Exception as exc:  # noqa: BLE001 - sorted below: only contention may remain
            # Six transactions on one document may exhaust the library's attempts: the caller
            # is answered 503 and retries, which is not a second request let through.
            outcomes.append("contended" if clients.backend_unavailable(exc) else repr(exc))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("accepted") == 1, outcomes
    assert set(outcomes) <= {"accepted", "in-progress", "contended"}, outcomes
    assert len(outcomes) == 6
    quota = db.collection(archive_store.QUOTAS).document("busy").get().to_dict()["export"]
    assert quota["count"] == 1


def test_a_number_a_day():
    db = clients.firestore_client()
    now = datetime.now(UTC)
    for i in range(limits.EXPORTS.per_day):
        _reserve(db, "daily", f"{i:020d}", now)
        db.collection(content_export.EXPORTS).document(f"{i:020d}").update({"status": "ready"})
    with pytest.raises(web.Problem) as refused:
        _reserve(db, "daily", "n" * 20, now)
    assert refused.value.slug == "archive-limit"
    assert 0 < int(refused.value.headers["Retry-After"]) <= 24 * 3600 + 1
    _reserve(db, "daily", "n" * 20, now + timedelta(days=1))  # the next day in Taipei

"""Snapshots against the Firestore emulator: one export per slot, verification, and a restore drill."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

import local_stack
from orderpally import clients
from orderpally.backups import exporters, rules, service, store

NOW = datetime.now(UTC)


@pytest.fixture
def exporter(emulators, tmp_path):
    return exporters.EmulatorExporter(os.environ["FIRESTORE_EMULATOR_HOST"], emulators.project_id, tmp_path)


def seed(db, n=5):
    for i in range(n):
        db.collection("accounts").document(f"a{i}").set({"n": i, "name": f"store {i}", "at": NOW})
        db.collection("accounts").document(f"a{i}").collection("audit_trail").document("e1").set({"action": "x"})
    db.collection("orders").document("o1").set({"store": "a1", "consumer": "a2", "amount": 1200})


def test_a_slot_is_exported_once_however_often_it_fires(exporter, tmp_path):
    db = clients.firestore_client()
    seed(db)
    first = service.take_snapshot(db, exporter, "20261124T190000Z", NOW)
    second = service.take_snapshot(db, exporter, "20261124T190000Z", NOW)
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    assert len(list((tmp_path / "20261124T190000Z").iterdir())) == 1
    record = db.collection(store.SNAPSHOTS).document("20261124T190000Z").get().to_dict()
    assert record["status"] == "completed"


def test_two_fires_of_one_slot_at_once_start_one_export(emulators, tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    db = clients.firestore_client()
    seed(db)
    started: list[str] = []
    both_claimed = threading.Barrier(2, timeout=5)

    class Counting(exporters.EmulatorExporter):
        def start(self, slot):
            started.append(slot)
            with contextlib.suppress(threading.BrokenBarrierError):
                both_claimed.wait(timeout=2)  # hold the lease while the other fire tries
            return super().start(slot)

    counting = Counting(os.environ["FIRESTORE_EMULATOR_HOST"], emulators.project_id, tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: service.take_snapshot(db, counting, "20261124T200000Z", NOW), range(2)))
    assert started == ["20261124T200000Z"]
    assert sorted(a["duplicate"] for a in answers) == [False, True]
    assert all("lease_until" not in a for a in answers)


def test_a_failed_slot_can_be_retried(emulators, tmp_path):
    db = clients.firestore_client()
    broken = exporters.EmulatorExporter("127.0.0.1:9", emulators.project_id, tmp_path)  # nothing listens there
    with pytest.raises(requests.ConnectionError):
        service.take_snapshot(db, broken, "20261124T190000Z", NOW)
    assert db.collection(store.SNAPSHOTS).document("20261124T190000Z").get().to_dict()["status"] == "failed"
    working = exporters.EmulatorExporter(os.environ["FIRESTORE_EMULATOR_HOST"], emulators.project_id, tmp_path)
    assert service.take_snapshot(db, working, "20261124T190000Z", NOW)["status"] == "completed"


def test_verification_passes_for_a_fresh_snapshot_and_fails_for_a_stale_one(exporter):
    db = clients.firestore_client()
    assert not service.verify_snapshots(db, exporter, True, NOW, timedelta(hours=26)).ok
    service.take_snapshot(db, exporter, rules.slot_for(None, NOW), NOW)
    assert service.verify_snapshots(db, exporter, True, NOW, timedelta(hours=26)).ok
    stale = service.verify_snapshots(db, exporter, True, NOW + timedelta(hours=27), timedelta(hours=26))
    assert not stale.ok
    assert not service.verify_snapshots(db, exporter, False, NOW, timedelta(hours=26)).ok


def test_a_missed_day_fails_although_the_last_export_was_seen_finished_late(exporter):
    # The 03:00 snapshot, seen finished at 04:30 by the verifier; the next day's never runs.
    db = clients.firestore_client()
    slot_at = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 03:00 in Taipei
    service.take_snapshot(db, exporter, rules.slot_for(slot_at, slot_at), slot_at + timedelta(hours=1, minutes=30))
    day = timedelta(hours=26)
    assert service.verify_snapshots(db, exporter, True, slot_at + timedelta(hours=25, minutes=30), day).ok
    missed = service.verify_snapshots(db, exporter, True, slot_at + timedelta(hours=26, minutes=30), day)
    assert not missed.ok
    assert any("older than" in problem for problem in missed.problems)


def all_documents(db) -> dict[str, dict]:
    found: dict[str, dict] = {}

    def walk(collection):
        for snap in collection.stream():
            found[snap.reference.path] = snap.to_dict()
            for sub in snap.reference.collections():
                walk(sub)

    for collection in db.collections():
        walk(collection)
    return found


def test_restore_drill_into_a_fresh_emulator_gives_back_every_document(exporter, emulators, tmp_path):
    from google.cloud import firestore

    db = clients.firestore_client()
    seed(db, n=20)
    original = all_documents(db)
    service.take_snapshot(db, exporter, "20261124T190000Z", NOW)
    metadata = exporters.metadata_file(tmp_path / "20261124T190000Z")
    assert metadata is not None

    port = emulators.ports.firestore + 7
    fresh = local_stack.ManagedProcess(
        "firestore-restore",
        ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}", "--quiet"],
        tmp_path / "restore.log",
    )
    fresh.start()
    try:
        local_stack.wait_until(local_stack.http_ready(f"http://127.0.0.1:{port}/"), fresh)
        response = requests.post(
            f"http://127.0.0.1:{port}/emulator/v1/projects/{emulators.project_id}:import",
            json={
                "database": f"projects/{emulators.project_id}/databases/(default)",
                "export_directory": str(metadata),
            },
            timeout=60,
        )
        response.raise_for_status()
        with local_stack.patched_env({"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{port}"}):
            restored = all_documents(firestore.Client(project=emulators.project_id))
    finally:
        fresh.stop()
    # The snapshot's own record is written after the export began, so compare the data it covers.
    restored.pop(f"{store.SNAPSHOTS}/20261124T190000Z", None)
    original.pop(f"{store.SNAPSHOTS}/20261124T190000Z", None)
    assert restored == original
    assert len(restored) == 41
    assert Path(metadata).exists()

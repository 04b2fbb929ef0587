"""Where Firestore exports go: the managed export API in production, the emulator's
export endpoint locally. Both sit behind the same two calls, so everything above
them runs the same code path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orderpally.config import Settings


@dataclass(frozen=True)
class ExportStarted:
    output_uri: str
    operation: str | None  # the long-running operation, when the export is asynchronous
    done: bool


class Exporter(Protocol):
    def start(self, slot: str) -> ExportStarted: ...

    def check(self, started: ExportStarted) -> tuple[bool, bool]:
        """(finished, succeeded with metadata present)."""
        ...


class ManagedExporter:
    """`FirestoreAdminClient.export_documents` into the backups bucket; `storage` makes the
    Storage client that finds the export's metadata file."""

    def __init__(self, project_id: str, bucket: str, storage: Callable[[], Any]) -> None:
        self.project_id = project_id
        self.bucket = bucket
        self.storage = storage

    def _client(self) -> Any:  # imported lazily: only this function needs it
        from google.cloud import firestore_admin_v1

        return firestore_admin_v1.FirestoreAdminClient()

    def start(self, slot: str) -> ExportStarted:
        from orderpally.backups.rules import output_prefix

        uri = output_prefix(self.bucket, slot)
        operation = self._client().export_documents(
            request={"name": f"projects/{self.project_id}/databases/(default)", "output_uri_prefix": uri}
        )
        return ExportStarted(output_uri=uri, operation=operation.operation.name, done=False)

    def check(self, started: ExportStarted) -> tuple[bool, bool]:
        from google.api_core import operations_v1

        client = self._client()
        operations = operations_v1.OperationsClient(client.transport.grpc_channel)
        operation = operations.get_operation(started.operation)
        if not operation.done:
            return False, False
        if operation.HasField("error") and operation.error.code != 0:
            return True, False
        # The export writes <prefix>/<prefix-name>.overall_export_metadata when complete.
        bucket, _, folder = started.output_uri.removeprefix("gs://").partition("/")
        blobs = self.storage().list_blobs(bucket, prefix=folder)
        return True, any(b.name.endswith(".overall_export_metadata") for b in blobs)


class EmulatorExporter:
    """The Firestore emulator's own export endpoint, into a local directory."""

    def __init__(self, emulator_host: str, project_id: str, directory: Path) -> None:
        self.emulator_host = emulator_host
        self.project_id = project_id
        self.directory = directory

    def start(self, slot: str) -> ExportStarted:
        import requests

        target = self.directory / slot
        target.mkdir(parents=True, exist_ok=True)
        response = requests.post(
            f"http://{self.emulator_host}/emulator/v1/projects/{self.project_id}:export",
            json={"database": f"projects/{self.project_id}/databases/(default)", "export_directory": str(target)},
            timeout=120,
        )
        response.raise_for_status()
        return ExportStarted(output_uri=target.as_uri(), operation=None, done=True)

    def check(self, started: ExportStarted) -> tuple[bool, bool]:
        folder = Path(started.output_uri.removeprefix("file://"))
        return True, any(folder.glob("*/*.overall_export_metadata"))


def metadata_file(export_folder: Path) -> Path | None:
    """The emulator export's metadata file, which its import endpoint takes."""
    return next(iter(sorted(export_folder.glob("*/*.overall_export_metadata"))), None)


def exporter_for(settings: Settings, storage: Callable[[], Any]) -> Exporter:
    """The emulator's exporter on the local stack, the managed export API elsewhere (with
    `storage`, the factory of the Storage client)."""
    host = settings.emulator_hosts.get("FIRESTORE_EMULATOR_HOST")
    if host:
        if not settings.local_backups_dir:
            raise RuntimeError("LOCAL_BACKUPS_DIR must name a directory for emulator exports")
        return EmulatorExporter(host, settings.project_id, Path(settings.local_backups_dir))
    return ManagedExporter(settings.project_id, settings.backups_bucket, storage)

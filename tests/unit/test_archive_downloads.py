"""Archives are streamed into Storage with their digest, and downloads answer with a link to them."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime

import flask
import pytest

from orderpally import web
from orderpally.archives import service as archives
from orderpally.config import ConfigurationError, load_settings
from orderpally.lifecycle import export
from orderpally.records import service as records


class FakeWriter(io.BytesIO):
    """What blob.open("wb") gives: finalised on a clean exit, cancelled on an error."""

    def __init__(self, stored: dict[str, bytes], name: str) -> None:
        super().__init__()
        self.stored, self.name = stored, name

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.stored[self.name] = self.getvalue()
        self.close()


class FakeBucket:
    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.opened: list[tuple[str, int, str]] = []

    def blob(self, name: str, chunk_size: int) -> FakeBucket:
        self._name, self._chunk = name, chunk_size
        return self

    def open(self, mode: str, content_type: str) -> FakeWriter:
        assert mode == "wb"
        self.opened.append((self._name, self._chunk, content_type))
        return FakeWriter(self.stored, self._name)


def test_a_streamed_archive_is_stored_with_the_digest_of_its_bytes():
    bucket = FakeBucket()
    with archives.streamed_archive(bucket, "a/e.zip") as (archive, out):
        archive.writestr("manifest.json", "{}")
        with archive.open("big.jsonl", "w", force_zip64=True) as entry:
            for _ in range(100):
                entry.write(b'{"path": "x"}\n' * 1000)
    stored = bucket.stored["a/e.zip"]
    assert out.sha256 == hashlib.sha256(stored).hexdigest()
    assert out.size == len(stored)
    assert bucket.opened == [("a/e.zip", archives.UPLOAD_CHUNK_BYTES, "application/zip")]
    assert archives.UPLOAD_CHUNK_BYTES % (256 * 1024) == 0  # resumable uploads take 256 KiB multiples
    with zipfile.ZipFile(io.BytesIO(stored)) as read:
        assert read.testzip() is None
        assert len(read.read("big.jsonl")) == 100 * 14 * 1000


def test_a_failed_build_stores_nothing():
    bucket = FakeBucket()

    def build() -> None:
        with archives.streamed_archive(bucket, "a/e.zip") as (archive, _):
            archive.writestr("half.jsonl", "x")
            raise RuntimeError("Firestore went away")

    with pytest.raises(RuntimeError):
        build()
    assert bucket.stored == {}


def test_records_are_written_as_jsonl_csv_and_manifest():
    bucket = FakeBucket()
    at = datetime(2026, 3, 1, 4, 5, tzinfo=UTC)
    rows = [{"kind": "audit", "at": at, "what": "sign_in", "actor": "customer:a", "details": {"付": 1}}]
    with archives.streamed_archive(bucket, "r.zip") as (zipped, _):
        records.write_archive(zipped, rows, "a", {"from": "2026-01-01", "to": "2026-12-31"})
    with zipfile.ZipFile(io.BytesIO(bucket.stored["r.zip"])) as read:
        assert json.loads(read.read("records.jsonl"))["at"] == at.isoformat()
        csv_text = read.read("records.csv").decode("utf-8")
        assert csv_text.startswith("\ufeffkind,at,what")
        assert csv_text.count("\r\n") == 2
        assert json.loads(read.read("manifest.json"))["rows"] == 1


def test_payment_is_checked_again_for_each_download():
    export.check_paid((0, "TWD"))
    with pytest.raises(web.Problem) as refused:
        export.check_paid((1, "TWD"))
    assert refused.value.slug == "payment-required"


@pytest.mark.parametrize(
    ("accept", "status"),
    [(None, 303), ("*/*", 303), ("text/html,*/*;q=0.8", 303), ("application/json", 200)],
)
def test_a_download_answers_a_link_never_the_bytes(accept, status):
    link = {
        "url": "https://storage.googleapis.com/b/o?X-Goog-Signature=ab",
        "expires_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    headers = {"Accept": accept} if accept else {}
    with flask.Flask(__name__).test_request_context("/d", headers=headers):
        response = web.download_link(flask.request, link, "0" * 64, 123)
    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(response.get_data()) == {
        "url": link["url"],
        "expires_at": "2026-01-01T00:00:00+00:00",
        "sha256": "0" * 64,
        "repr_digest": "sha-256=:" + "A" * 43 + "=:",  # RFC 9530: the same 32 bytes, base64
        "size": 123,
    }
    assert response.headers.get("Location") == (link["url"] if status == 303 else None)


def test_signing_goes_to_google_in_production_and_only_over_https():
    assert load_settings({}).iam_credentials_base_url == ""
    local = {"IAM_CREDENTIALS_BASE_URL": "http://127.0.0.1:8701/", "ENVIRONMENT": "test"}
    assert load_settings(local).iam_credentials_base_url == "http://127.0.0.1:8701"
    with pytest.raises(ConfigurationError, match="IAM_CREDENTIALS_BASE_URL"):
        load_settings({**local, "ENVIRONMENT": "staging", "SMTP_SECURITY": "starttls"})


def test_locally_a_function_signs_as_the_account_terraform_gives_it():
    env = {"K_SERVICE": "account", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1", "GOOGLE_CLOUD_PROJECT": "p"}
    assert load_settings(env).service_account_email == "fn-account@p.iam.gserviceaccount.com"
    assert load_settings({"K_SERVICE": "account"}).service_account_email == ""  # production: the metadata server

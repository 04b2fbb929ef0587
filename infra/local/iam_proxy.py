"""The local stack's IAM: each function reaches the emulators only as its catalogue identity.

The emulators let anyone do anything; production lets a function's service
account do only what infra/functions.yaml `grants` it (plus the baseline:
Firestore datastore.user and logging). This process stands between the two: it
listens on one port per identity, so the port says who is calling, and each
port serves every emulator at once. Connections starting with the HTTP/2
preface are gRPC (Firestore, Pub/Sub); the rest are HTTP/1.1 (Cloud Storage,
Identity Toolkit, and the IAM Credentials signBlob stand-in). A function is
given, all pointing at its own port:

  FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST, FIREBASE_AUTH_EMULATOR_HOST,
  STORAGE_EMULATOR_HOST (http://...), and
  IAM_CREDENTIALS_BASE_URL  where `POST {base}/v1/projects/-/serviceAccounts/{email}:signBlob`
                            with {"payload": <base64>} answers {"keyId", "signedBlob"} as
                            Google's IAM Credentials API does (unset in production, meaning
                            https://iamcredentials.googleapis.com). The public keys are at
                            `GET {base}/service_accounts/v1/metadata/x509/{email}` (and /jwk/).
  CLOUDKMS_BASE_URL         where `POST {base}/v1/{key version}:asymmetricSign` with
                            {"digest": {"sha256": <base64>}} and `GET {base}/v1/{key version}/publicKey`
                            answer as Cloud KMS does, for an EC_SIGN_P256_SHA256 key per key name,
                            kept in `<state dir>/kms/` across restarts; each needs the catalogue's
                            `key:<name>:roles/cloudkms.signer` or `...publicKeyViewer` grant
                            (name: the key's id without "orderpally-").

What it refuses, it refuses as Google does, so client libraries raise what they
raise in production: gRPC PERMISSION_DENIED (Pub/Sub), HTTP 403 JSON errors
(Storage, Identity Toolkit, IAM Credentials). Firestore needs no IAM check, but
every RunQuery / RunAggregationQuery is checked against the indexes in
terraform/*.tf (firestore_indexes.py); one production could not serve is
answered FAILED_PRECONDITION "The query requires an index..." and written to
`<state dir>/iam/index-violations.jsonl`, which the tests assert empty. A Commit
or BatchWrite of more than 500 writes is refused INVALID_ARGUMENT, as production
refuses it. Every
refusal is also written to `<state dir>/iam/refusals.jsonl`, and every distinct
query shape to `queries.jsonl`.

The `owner` identity (the first port) may do everything: it is how in-process
tests reach Firestore, so their queries are checked too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socketserver
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import firestore_indexes

OWNER = "owner"
MAX_WRITES_PER_REQUEST = 500  # Firestore's limit on one Commit or BatchWrite
HTTP2_PREFACE = b"PRI"
BASELINE_ROLES = ("project:roles/datastore.user", "project:roles/logging.logWriter")

# --- who may do what (plain data, unit-tested) -----------------------------------------------

# Object permissions of the predefined Storage roles (cloud.google.com/storage/docs/access-control/iam-roles).
# None of them holds storage.buckets.get/list/create: those need roles/storage.admin or legacy bucket roles.
STORAGE_ROLES: dict[str, frozenset[str]] = {
    "roles/storage.objectViewer": frozenset({"storage.objects.get", "storage.objects.list"}),
    "roles/storage.objectCreator": frozenset({"storage.objects.create"}),
    "roles/storage.objectUser": frozenset(
        {
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.update",
        }
    ),
    "roles/storage.objectAdmin": frozenset(
        {
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.update",
            "storage.objects.getIamPolicy",
            "storage.objects.setIamPolicy",
        }
    ),
}
STORAGE_ADMIN = frozenset(
    {
        "storage.buckets.create",
        "storage.buckets.delete",
        "storage.buckets.get",
        "storage.buckets.list",
        "storage.buckets.update",
        "storage.buckets.getIamPolicy",
        "storage.buckets.setIamPolicy",
    }
) | set().union(*STORAGE_ROLES.values())

# Identity Toolkit admin methods that roles/firebaseauth.viewer's *.get/list permissions allow.
AUTH_VIEWER_METHODS = frozenset({"accounts:lookup", "accounts:query", "accounts:batchGet"})


@dataclass(frozen=True)
class Identity:
    name: str  # the catalogue entry, or OWNER
    email: str
    grants: frozenset[str] = frozenset()

    @property
    def owner(self) -> bool:
        return self.name == OWNER

    def storage_permissions(self, bucket_alias: str | None) -> frozenset[str]:
        if self.owner:
            return STORAGE_ADMIN
        if "project:roles/storage.admin" in self.grants:
            return STORAGE_ADMIN
        if bucket_alias is None:
            return frozenset()
        roles = [g.split(":", 2)[2] for g in self.grants if g.startswith(f"bucket:{bucket_alias}:")]
        return frozenset().union(*(STORAGE_ROLES.get(r, frozenset()) for r in roles))

    def may_publish(self, topic: str) -> bool:
        return self.owner or f"topic:{topic}:roles/pubsub.publisher" in self.grants

    def auth_level(self) -> str:
        """'admin', 'viewer' or '' (no Firebase Authentication role)."""
        if self.owner or "project:roles/firebaseauth.admin" in self.grants:
            return "admin"
        if "project:roles/firebaseauth.viewer" in self.grants:
            return "viewer"
        return ""

    def may_use_firestore_http(self, path: str) -> bool:
        if path.startswith("/emulator/") and (path.endswith((":export", ":import"))):
            return self.owner or "project:roles/datastore.importExportAdmin" in self.grants
        if path.startswith("/emulator/"):
            return self.owner  # resetting the emulator has no production counterpart
        return True  # documents: datastore.user is every function's

    def may_use_key(self, key_alias: str, role: str) -> bool:
        return self.owner or f"key:{key_alias}:{role}" in self.grants

    def may_sign_as(self, email: str) -> bool:
        return self.owner or (email == self.email and "self:roles/iam.serviceAccountTokenCreator" in self.grants)


def firestore_http(path: str) -> bool:
    """Whether an HTTP/1.1 path is the Firestore emulator's (its REST API, export and import)."""
    parts = path.split("/")
    if path.startswith("/v1/projects/") and "/databases/" in path:
        return True
    return (
        path.startswith("/emulator/v1/projects/")
        and len(parts) > 4
        and (":" in parts[4] or (len(parts) > 5 and parts[5] == "databases"))
    )


def service_account_email(function: str, project_id: str) -> str:
    """As terraform/service_accounts.tf names them: fn-<name>, cut to 30 characters."""
    return f"{f'fn-{function}'[:30]}@{project_id}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class StorageAction:
    permissions: tuple[tuple[str, str], ...]  # (permission, bucket) pairs, all needed
    creates: tuple[str, str] | None = None  # (bucket, object) written: overwriting also needs delete


def storage_action(method: str, path: str, query: dict[str, list[str]]) -> StorageAction | None:
    """The permissions a Cloud Storage request needs; None for what the proxy itself answers."""
    segments = [unquote(s) for s in path.split("/")[1:]]
    if path in ("", "/"):
        return None
    read = method in ("GET", "HEAD")
    if segments[:2] in (["storage", "v1"], ["download", "storage"], ["upload", "storage"]):
        api = segments[0]
        rest = segments[3:] if api in ("download", "upload") else segments[2:]
        if rest == ["b"]:
            return StorageAction(((f"storage.buckets.{'list' if read else 'create'}", ""),))
        if len(rest) < 2 or rest[0] != "b":
            return StorageAction((("storage.unknown", ""),))
        bucket = rest[1]
        tail = rest[2:]
        if not tail:
            verb = {"GET": "get", "HEAD": "get", "DELETE": "delete"}.get(method, "update")
            return StorageAction(((f"storage.buckets.{verb}", bucket),))
        if tail[0] == "iam":
            return StorageAction(((f"storage.buckets.{'getIamPolicy' if read else 'setIamPolicy'}", bucket),))
        if tail[0] != "o":
            return StorageAction((("storage.unknown", bucket),))
        if len(tail) == 1:
            if read:
                return StorageAction((("storage.objects.list", bucket),))
            if "upload_id" in query:  # a resumable upload's later chunks: its start was checked
                return StorageAction(())
            name = (query.get("name") or [""])[0]
            return StorageAction((("storage.objects.create", bucket),), (bucket, name))
        # Object names may hold "/", encoded as %2F; rejoin them.
        for verb in ("copyTo", "rewriteTo"):
            if verb in tail[2:]:
                at = tail.index(verb, 2)
                target_bucket, target = tail[at + 2], "/".join(tail[at + 4 :])
                return StorageAction(
                    (("storage.objects.get", bucket), ("storage.objects.create", target_bucket)),
                    (target_bucket, target),
                )
        if tail[-1] == "compose" and not read:
            name = "/".join(tail[1:-1])
            return StorageAction((("storage.objects.get", bucket), ("storage.objects.create", bucket)), (bucket, name))
        name = "/".join(tail[1:])
        verb = {"GET": "get", "HEAD": "get", "DELETE": "delete"}.get(method, "update")
        return StorageAction(((f"storage.objects.{verb}", bucket),))
    if segments[0] == "batch":
        return StorageAction((("storage.batch.unchecked", ""),))
    if segments[0] in ("wipe", "_internal"):
        return StorageAction((("storage.emulator.admin", ""),))
    # XML API and public URLs: /<bucket>/<object>
    bucket, name = segments[0], "/".join(segments[1:])
    if not name:
        return StorageAction(((f"storage.objects.{'list' if read else 'create'}", bucket),))
    if read:
        return StorageAction((("storage.objects.get", bucket),))
    if method == "DELETE":
        return StorageAction((("storage.objects.delete", bucket),))
    return StorageAction((("storage.objects.create", bucket),), (bucket, name))


def auth_permitted(identity: Identity, method: str, path: str) -> bool:
    """Whether Identity Toolkit (or the Auth emulator behind it) lets the identity make this call."""
    if path in ("", "/"):
        return True
    if path.startswith("/emulator/"):
        return identity.owner  # the emulator's own controls have no production counterpart
    if path.startswith("/securetoken.googleapis.com/"):
        return True  # refresh-token exchange: authorised by the API key, not IAM
    if not path.startswith("/identitytoolkit.googleapis.com/"):
        return identity.owner
    api_path = path.split("/", 3)[3] if path.count("/") >= 3 else ""
    if "/projects/" not in f"/{api_path}":
        return True  # public end-user methods (signInWithPassword, ...): API key, not IAM
    level = identity.auth_level()
    if level == "admin":
        return True
    if level != "viewer":
        return False
    last = api_path.rsplit("/", 1)[-1]
    return last in AUTH_VIEWER_METHODS or (method == "GET" and ":" not in last)


def google_http_error(code: int, status: str, message: str, reason: str = "forbidden") -> bytes:
    """The JSON error body Google's HTTP APIs answer with."""
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": status,
            }
        }
    ).encode()


# --- signing ----------------------------------------------------------------------------------


class Signer:
    """One RSA key standing in for every service account's Google-managed key."""

    def __init__(self, directory: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        directory.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha1(der, usedforsecurity=False).hexdigest()
        key_path = directory / "signing-key.pem"
        key_path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        self.public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (directory / "signing-key.pub.pem").write_bytes(self.public_pem)

    def sign(self, payload: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())

    def certificate(self, email: str) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(int(self.key_id[:15], 16))
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def jwk(self) -> dict[str, str]:
        numbers = self._key.public_key().public_numbers()

        def b64(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.key_id,
            "n": b64(numbers.n),
            "e": b64(numbers.e),
        }


class KmsKeys:
    """Cloud KMS's asymmetric P-256 keys, one per key name, kept in `directory` across restarts."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def key(self, name: str) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        with self._lock:
            if name not in self._keys:
                path = self._directory / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".pem")
                if path.exists():
                    self._keys[name] = serialization.load_pem_private_key(path.read_bytes(), password=None)
                else:
                    key = ec.generate_private_key(ec.SECP256R1())
                    self._directory.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(
                        key.private_bytes(
                            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                        )
                    )
                    path.chmod(0o600)
                    self._keys[name] = key
            return self._keys[name]

    def sign_digest(self, name: str, digest: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        return self.key(name).sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def public_pem(self, name: str) -> str:
        from cryptography.hazmat.primitives import serialization

        public = self.key(name).public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


KMS_VERSION = re.compile(
    r"/v1/(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/([^/:]+)/cryptoKeyVersions/[0-9]+)"
    r"(:asymmetricSign|/publicKey)"
)


# --- the proxy ----------------------------------------------------------------------------------


@dataclass
class Upstreams:
    firestore: str  # host:port
    pubsub: str
    auth: str
    storage: str


@dataclass
class Proxy:
    project_id: str
    upstreams: Upstreams
    buckets: dict[str, str]  # bucket name -> alias (backups, exports, attachments)
    indexes: firestore_indexes.Indexes
    state_dir: Path
    signer: Signer
    kms: KmsKeys
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: set[str] = field(default_factory=set)

    def record_refusal(self, identity: Identity, service: str, what: str) -> None:
        """Every refusal, so a failing test's cause is one file away (`<state dir>/iam/refusals.jsonl`)."""
        entry = json.dumps(
            {"at": datetime.now(UTC).isoformat(), "identity": identity.name, "service": service, "what": what}
        )
        with self._lock, (self.state_dir / "refusals.jsonl").open("a") as log:
            log.write(entry + "\n")

    def record_query(self, identity: Identity, query: firestore_indexes.Query, need: Any) -> None:
        """Every distinct query shape once, with who asked and what it lacks."""
        described = firestore_indexes.describe_query(query)
        entry = {"identity": identity.name, "query": described, "missing": need.describe() if need else None}
        key = json.dumps(entry, sort_keys=True)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            with (self.state_dir / "queries.jsonl").open("a") as log:
                log.write(key + "\n")
            if need:
                with (self.state_dir / "index-violations.jsonl").open("a") as log:
                    log.write(key + "\n")


def _index_refusal(project_id: str, need: firestore_indexes.Need) -> str:
    # Production's text, whose console link we cannot give: name the index to add instead.
    return (
        "The query requires an index. You can create it here: "
        f"https://console.firebase.google.com/project/{project_id}/firestore/indexes "
        f"(locally: add {need.describe()} to terraform/firestore.tf)"
    )


class GrpcForwarder:
    """Forwards any gRPC method as raw bytes; looks inside only Publish and (aggregation) queries."""

    def __init__(self, proxy: Proxy, identity: Identity) -> None:
        import grpc

        self.proxy = proxy
        self.identity = identity
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channels = {
            "firestore": grpc.insecure_channel(proxy.upstreams.firestore, options=options),
            "pubsub": grpc.insecure_channel(proxy.upstreams.pubsub, options=options),
        }

    def handler(self) -> Any:
        import grpc

        forwarder = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                method = details.method
                if method.startswith("/google.firestore."):
                    channel = forwarder.channels["firestore"]
                elif method.startswith(("/google.pubsub.", "/google.iam.v1.")):
                    channel = forwarder.channels["pubsub"]
                else:
                    return None

                def behaviour(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                    return forwarder.forward(channel, method, requests, context)

                return grpc.stream_stream_rpc_method_handler(behaviour)

        return Handler()

    def refusal(self, method: str, first: bytes | None) -> tuple[Any, str] | None:
        import grpc

        if method.startswith(("/google.pubsub.", "/google.iam.v1.")) and not self.identity.owner:
            if method == "/google.pubsub.v1.Publisher/Publish" and first is not None:
                from google.pubsub_v1.types import PublishRequest

                topic = PublishRequest.deserialize(first).topic.rsplit("/", 1)[-1]
                if self.identity.may_publish(topic):
                    return None
            # roles/pubsub.publisher holds pubsub.topics.publish only: nothing else is allowed.
            self.proxy.record_refusal(self.identity, "pubsub", method)
            return grpc.StatusCode.PERMISSION_DENIED, "User not authorized to perform this action."
        if method in ("/google.firestore.v1.Firestore/Commit", "/google.firestore.v1.Firestore/BatchWrite"):
            if first is None:
                return None
            from google.cloud.firestore_v1 import types

            kind = types.CommitRequest if method.endswith("Commit") else types.BatchWriteRequest
            if len(kind.deserialize(first).writes) > MAX_WRITES_PER_REQUEST:
                # As production answers; the emulator commits any number.
                self.proxy.record_refusal(self.identity, "firestore", f"{method}: over {MAX_WRITES_PER_REQUEST} writes")
                return grpc.StatusCode.INVALID_ARGUMENT, "maximum 500 writes allowed per request"
            return None
        if method in ("/google.firestore.v1.Firestore/RunQuery", "/google.firestore.v1.Firestore/RunAggregationQuery"):
            if first is None:
                return None
            from google.cloud.firestore_v1 import types

            if method.endswith("RunQuery"):
                structured = types.RunQueryRequest.deserialize(first).structured_query
            else:
                structured = types.RunAggregationQueryRequest.deserialize(
                    first
                ).structured_aggregation_query.structured_query
            query = firestore_indexes.from_structured_query(structured)
            need = firestore_indexes.missing_index(query, self.proxy.indexes)
            self.proxy.record_query(self.identity, query, need)
            if need is not None:
                return grpc.StatusCode.FAILED_PRECONDITION, _index_refusal(self.proxy.project_id, need)
        return None

    def forward(self, channel: Any, method: str, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        import grpc

        checked = method.endswith(
            ("/Publish", "/RunQuery", "/RunAggregationQuery", "Firestore/Commit", "Firestore/BatchWrite")
        ) or method.startswith(("/google.pubsub.", "/google.iam.v1."))
        if checked:
            # Unary requests (and RunQuery's) carry one message: read it before forwarding.
            first = next(requests, None)
            refused = self.refusal(method, first)
            if refused:
                context.abort(*refused)
            requests = itertools.chain([] if first is None else [first], requests)
        metadata = [
            (k, v)
            for k, v in context.invocation_metadata()
            if not k.startswith(":") and k not in ("user-agent", "te", "content-type", "grpc-timeout")
        ]
        remaining = context.time_remaining()
        call = channel.stream_stream(method)(
            requests, metadata=metadata, timeout=remaining if remaining and remaining < 1e6 else None
        )
        context.add_callback(call.cancel)
        try:
            yield from call
            context.set_trailing_metadata(call.trailing_metadata() or ())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and not context.is_active():
                return
            with contextlib.suppress(ValueError):
                context.set_trailing_metadata(exc.trailing_metadata() or ())
            context.abort(exc.code(), exc.details() or "")


def make_http_handler(proxy: Proxy, identity: Identity) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
            self.send_response(status)
            sent = {k.lower() for k, _ in headers or ()}
            for key, value in headers or ():
                self.send_header(key, value)
            if "content-type" not in sent:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                return self.rfile.read(length)
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return b""

        def _handle(self) -> None:
            body = self._body()
            url = urlsplit(self.path)
            path = url.path
            if firestore_http(path):
                # The Firestore emulator's REST side: documents (datastore.user, every function's) and
                # its stand-in for the managed export and import (datastore.importExportAdmin).
                if not identity.may_use_firestore_http(path):
                    proxy.record_refusal(identity, "firestore", f"{self.command} {path}")
                    message = "The caller does not have permission (datastore.databases.export/import)."
                    self._send(403, google_http_error(403, "PERMISSION_DENIED", message))
                    return
                self._forward(proxy.upstreams.firestore, body)
                return
            if path.startswith(("/identitytoolkit.googleapis.com/", "/securetoken.googleapis.com/", "/emulator/")):
                if not auth_permitted(identity, self.command, path):
                    proxy.record_refusal(identity, "identitytoolkit", f"{self.command} {path}")
                    self._send(
                        403,
                        google_http_error(
                            403,
                            "PERMISSION_DENIED",
                            f"The caller does not have permission: {identity.email} may not call "
                            f"{path.rsplit('/', 1)[-1]} (no Firebase Authentication role in infra/functions.yaml)",
                        ),
                    )
                    return
                self._forward(proxy.upstreams.auth, body)
                return
            if path.startswith(("/v1/projects/-/serviceAccounts/", "/service_accounts/v1/metadata/")):
                self._iam_credentials(path, body)
                return
            if kms := KMS_VERSION.fullmatch(path):
                self._kms(kms.group(1), kms.group(2).removeprefix("orderpally-"), kms.group(3), body)
                return
            if path in ("", "/"):
                self._send(200, b"OK", [("Content-Type", "text/plain")])  # health probes of every emulator host
                return
            self._storage(path, parse_qs(url.query), body)

        def _storage(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
            action = storage_action(self.command, path, query)
            if action is None:
                self._forward(proxy.upstreams.storage, body)
                return
            for permission, bucket in action.permissions:
                if permission not in identity.storage_permissions(proxy.buckets.get(bucket)):
                    self._storage_refusal(permission, bucket)
                    return
            if action.creates:
                bucket, name = action.creates
                if not name:
                    name = _upload_name(self.headers.get("Content-Type") or "", body)
                if "storage.objects.delete" not in identity.storage_permissions(proxy.buckets.get(bucket)) and (
                    name and _object_exists(proxy.upstreams.storage, bucket, name)
                ):
                    # Replacing an object deletes the old one: objectCreator alone may not overwrite.
                    self._storage_refusal("storage.objects.delete", bucket)
                    return
            self._forward(proxy.upstreams.storage, body)

        def _storage_refusal(self, permission: str, bucket: str) -> None:
            proxy.record_refusal(
                identity, "storage", f"{permission} on {bucket or 'the project'}: {self.command} {self.path}"
            )
            what = "object" if ".objects." in permission else "bucket"
            message = (
                f"{identity.email} does not have {permission} access to the Google Cloud Storage {what}. "
                f"Permission '{permission}' denied on resource (or it may not exist)."
            )
            self._send(403, google_http_error(403, "PERMISSION_DENIED", message))

        def _iam_credentials(self, path: str, body: bytes) -> None:
            if path.startswith("/service_accounts/v1/metadata/"):
                kind, email = path.split("/")[4], unquote(path.split("/")[5] if path.count("/") >= 5 else "")
                if kind == "x509":
                    payload = {proxy.signer.key_id: proxy.signer.certificate(email)}
                else:
                    payload = {"keys": [proxy.signer.jwk()]}
                self._send(200, json.dumps(payload).encode())
                return
            email = unquote(path.rsplit("/", 1)[-1].split(":", 1)[0])
            if self.command != "POST" or not path.endswith(":signBlob"):
                self._send(404, google_http_error(404, "NOT_FOUND", "Method not found.", "notFound"))
                return
            if not identity.may_sign_as(email):
                proxy.record_refusal(identity, "iamcredentials", f"signBlob as {email}")
                message = "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist)."
                error = json.loads(google_http_error(403, "PERMISSION_DENIED", message))
                error["error"]["details"] = [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "IAM_PERMISSION_DENIED",
                        "domain": "iam.googleapis.com",
                        "metadata": {"permission": "iam.serviceAccounts.signBlob"},
                    }
                ]
                self._send(403, json.dumps(error).encode())
                return
            try:
                payload = base64.b64decode(json.loads(body or b"{}")["payload"], validate=True)
            except (ValueError, KeyError, TypeError):
                self._send(400, google_http_error(400, "INVALID_ARGUMENT", "Invalid payload.", "badRequest"))
                return
            signed = base64.b64encode(proxy.signer.sign(payload)).decode()
            self._send(200, json.dumps({"keyId": proxy.signer.key_id, "signedBlob": signed}).encode())

        def _kms(self, version: str, alias: str, operation: str, body: bytes) -> None:
            sign = operation == ":asymmetricSign"
            if (self.command, sign) not in (("POST", True), ("GET", False)):
                self._send(404, google_http_error(404, "NOT_FOUND", "Method not found.", "notFound"))
                return
            role, permission = (
                ("roles/cloudkms.signer", "cloudkms.cryptoKeyVersions.useToSign")
                if sign
                else ("roles/cloudkms.publicKeyViewer", "cloudkms.cryptoKeyVersions.viewPublicKey")
            )
            if not identity.may_use_key(alias, role):
                proxy.record_refusal(identity, "cloudkms", f"{permission} on {version}")
                message = f"Permission '{permission}' denied on resource '{version}' (or it may not exist)."
                self._send(403, google_http_error(403, "PERMISSION_DENIED", message))
                return
            if not sign:
                answer = {"pem": proxy.kms.public_pem(version), "algorithm": "EC_SIGN_P256_SHA256", "name": version}
                self._send(200, json.dumps(answer).encode())
                return
            try:
                digest = base64.b64decode(json.loads(body or b"{}")["digest"]["sha256"], validate=True)
                if len(digest) != 32:
                    raise ValueError("not a SHA-256 digest")
            except (ValueError, KeyError, TypeError):
                self._send(400, google_http_error(400, "INVALID_ARGUMENT", "Invalid digest.", "badRequest"))
                return
            signature = base64.b64encode(proxy.kms.sign_digest(version, digest)).decode()
            self._send(200, json.dumps({"signature": signature, "name": version}).encode())

        def _forward(self, upstream: str, body: bytes) -> None:
            hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
            headers["Content-Length"] = str(len(body))
            try:
                # The Host header is kept: the emulator builds resumable-upload URLs from it.
                status, out, data = _upstream_request(upstream, self.command, self.path, body, headers)
            except OSError as exc:
                self._send(502, google_http_error(502, "UNAVAILABLE", f"upstream unavailable: {exc}", "backendError"))
                return
            self._send(status, data, [(k, v) for k, v in out if k.lower() not in hop])

        def do_GET(self) -> None:
            self._handle()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    return Handler


def _upload_name(content_type: str, body: bytes) -> str:
    """The object name of a multipart or resumable-start upload, from its JSON metadata."""
    text = body[:65536].decode("utf-8", errors="replace")
    if content_type.startswith("application/json"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(text).get("name") or "")
    start = text.find("{")
    if start >= 0:
        with contextlib.suppress(ValueError, AttributeError):
            decoded, _ = json.JSONDecoder().raw_decode(text[start:])
            return str(decoded.get("name") or "")
    return ""


_connections = threading.local()


def _upstream_request(
    upstream: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request over this thread's kept-alive connection to an emulator.

    Reusing connections matters: every new one takes an ephemeral port for a minute
    (TIME_WAIT), and the test port ranges lie among the ephemeral ones.
    """
    pool: dict[str, http.client.HTTPConnection] = _connections.__dict__.setdefault("pool", {})
    for attempt in (1, 2):
        connection = pool.get(upstream)
        if connection is None:
            host, port = upstream.rsplit(":", 1)
            connection = pool[upstream] = http.client.HTTPConnection(host, int(port), timeout=300)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            connection.close()
            pool.pop(upstream, None)
            if attempt == 2:
                raise
            continue  # a kept-alive connection the emulator had closed: once more on a new one
        if response.will_close:
            connection.close()
            pool.pop(upstream, None)
        return response.status, response.getheaders(), data
    raise AssertionError("unreachable")


def _object_exists(upstream: str, bucket: str, name: str) -> bool:
    from urllib.parse import quote

    path = f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
    return _upstream_request(upstream, "GET", path, b"", {})[0] == 200


# --- one port per identity: gRPC and HTTP/1.1 told apart by the first bytes -------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _splitter(grpc_path: str, http_path: str) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(len(HTTP2_PREFACE))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        # Unix sockets inside: no ephemeral TCP port per connection.
        target = grpc_path if head == HTTP2_PREFACE else http_path
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(target)
        except OSError:
            writer.close()
            return
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def serve(config: dict[str, Any]) -> None:
    import grpc

    state_dir = Path(config["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in ("queries.jsonl", "index-violations.jsonl", "refusals.jsonl"):
        (state_dir / name).write_text("")  # this run's findings only
    up = config["upstreams"]
    proxy = Proxy(
        project_id=config["project_id"],
        upstreams=Upstreams(up["firestore"], up["pubsub"], up["auth"], up["storage"]),
        buckets=config["buckets"],
        indexes=firestore_indexes.load_terraform(Path(config["terraform_dir"])),
        state_dir=state_dir,
        signer=Signer(state_dir),
        kms=KmsKeys(state_dir / "kms"),
    )
    # Streams (Firestore Listen/Write, StreamingPull) hold a worker each: keep plenty.
    pool = futures.ThreadPoolExecutor(max_workers=200, thread_name_prefix="grpc")
    listeners: list[tuple[int, str, str]] = []
    grpc_servers: list[Any] = []
    # Short paths: a Unix socket's may not exceed 107 bytes, wherever the state dir is.
    sockets = tempfile.mkdtemp(prefix="op-iam-")

    def stop(*_: object) -> None:
        # Exit at once: gRPC's threads would otherwise hold the process until the stack's SIGKILL.
        shutil.rmtree(sockets, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for spec in config["identities"]:
        identity = Identity(spec["name"], spec["email"], frozenset([*spec["grants"], *BASELINE_ROLES]))
        server = grpc.server(
            pool,
            handlers=[GrpcForwarder(proxy, identity).handler()],
            options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
        )
        grpc_path, http_path = f"{sockets}/{len(listeners)}.grpc", f"{sockets}/{len(listeners)}.http"
        server.add_insecure_port(f"unix:{grpc_path}")
        server.start()
        grpc_servers.append(server)  # a gRPC server no longer referenced is stopped by its finaliser
        http_server = UnixHTTPServer(http_path, make_http_handler(proxy, identity))
        threading.Thread(target=http_server.serve_forever, daemon=True).start()
        listeners.append((int(spec["port"]), grpc_path, http_path))

    async def main() -> None:
        servers = [
            await asyncio.start_server(_splitter(g, h), "127.0.0.1", port, reuse_address=True)
            for port, g, h in listeners
        ]
        print(f"iam proxy: {len(servers)} identities listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description="The local stack's IAM and index enforcement.")
    parser.add_argument("--config", type=Path, required=True, help="JSON written by local_stack.py")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(json.loads(args.config.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

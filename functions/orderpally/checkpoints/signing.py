"""Who signs checkpoints: ECDSA P-256 with SHA-256, DER signatures, behind one `Signer` interface.

In production a Cloud KMS key version signs (`KmsSigner`: the private key never leaves KMS).
Cloud KMS has no emulator: the local stack's IAM proxy answers its API (and checks the
catalogue's grants), and pure tests use a `LocalSigner`, which holds a key in memory.
`cryptography` is imported where it is used: only the scheduled checkpoint function loads this.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any, Protocol

KMS_API = "https://cloudkms.googleapis.com/v1"
KMS_ALGORITHM = "EC_SIGN_P256_SHA256"


class Signer(Protocol):
    @property
    def key_id(self) -> str: ...

    def public_key_pem(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """A DER ECDSA P-256 signature over SHA-256(message)."""
        ...


def key_fingerprint(public_key_pem: bytes) -> str:
    """A key's id: the first 16 hex digits of SHA-256 over its DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def verify_signature(public_key_pem: bytes, message: bytes, signature: bytes) -> bool:
    """Is `signature` a DER ECDSA P-256/SHA-256 signature of `message` by the key? False for any other key kind."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


class LocalSigner:
    """A P-256 key in memory, from PEM (PKCS#8 or SEC1, unencrypted)."""

    def __init__(self, private_key_pem: bytes) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("a checkpoint key is an ECDSA P-256 key")
        self._key = key
        self.private_key_pem = private_key_pem
        self._public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = key_fingerprint(self._public_pem)

    @classmethod
    def generate(cls) -> LocalSigner:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key_pem(self) -> bytes:
        return self._public_pem

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


class Response(Protocol):
    def json(self) -> Any: ...

    def raise_for_status(self) -> Any: ...


class Session(Protocol):
    """What KmsSigner needs of google.auth.transport.requests.AuthorizedSession (default timeout 120 s)."""

    def post(self, url: str, *, json: Any) -> Response: ...

    def get(self, url: str) -> Response: ...


class KmsSigner:
    """A Cloud KMS asymmetric key version (EC_SIGN_P256_SHA256) over its REST API.

    `key_version_name` is projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/N.
    """

    def __init__(self, key_version_name: str, session: Session, base_url: str = KMS_API) -> None:
        self.key_version_name = key_version_name
        self._api = base_url
        self._session = session
        self._public_pem: bytes | None = None

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.public_key_pem())

    def public_key_pem(self) -> bytes:
        if self._public_pem is None:
            response = self._session.get(f"{self._api}/{self.key_version_name}/publicKey")
            response.raise_for_status()
            body = response.json()
            if body.get("algorithm", KMS_ALGORITHM) != KMS_ALGORITHM:
                raise ValueError(f"{self.key_version_name} is {body.get('algorithm')}, not {KMS_ALGORITHM}")
            self._public_pem = body["pem"].encode("ascii")
        return self._public_pem

    def sign(self, message: bytes) -> bytes:
        digest = base64.b64encode(hashlib.sha256(message).digest()).decode("ascii")
        response = self._session.post(
            f"{self._api}/{self.key_version_name}:asymmetricSign", json={"digest": {"sha256": digest}}
        )
        response.raise_for_status()
        signature = base64.b64decode(response.json()["signature"])
        # A signature nobody can verify must not be published: check it before it leaves.
        if not verify_signature(self.public_key_pem(), message, signature):
            raise ValueError(f"Cloud KMS returned a signature {self.key_version_name}'s public key rejects")
        return signature


@functools.cache
def configured_signer() -> Signer:
    """The audit checkpoints' signer: the Cloud KMS key version Terraform made. Locally, where
    Cloud KMS has no emulator, the IAM proxy answers its API and checks the catalogue's grants."""
    from orderpally.config import settings

    cfg = settings()
    if not cfg.checkpoint_signing_key:
        raise RuntimeError("set CHECKPOINT_SIGNING_KEY: the Cloud KMS key version that signs checkpoints")
    session: Any
    if cfg.cloudkms_base_url and cfg.uses_emulators:
        import requests

        session = requests.Session()  # the stand-in knows the function by its port, not by a token
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        session = AuthorizedSession(credentials)
    return KmsSigner(
        cfg.checkpoint_signing_key, session, f"{cfg.cloudkms_base_url}/v1" if cfg.cloudkms_base_url else KMS_API
    )

"""Checking V4 signed Cloud Storage URLs from the URL alone, as Cloud Storage would.

The storage emulator serves a signed URL without checking it, so the tests check the signature
themselves, against the public key of the local IAM stand-in that signed it.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def verify_v4_url(url: str, public_key: rsa.RSAPublicKey) -> None:
    """Checks a V4 signed URL's signature as Cloud Storage would, from the URL alone.

    https://cloud.google.com/storage/docs/access-control/signing-urls-manually: the canonical
    request is method, path, the query (without the signature) sorted and encoded, the signed
    headers (here `host` only), and UNSIGNED-PAYLOAD; the signed string names the algorithm, the
    date, the credential scope and the canonical request's SHA-256. Raises InvalidSignature.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    signature = bytes.fromhex(dict(query)["X-Goog-Signature"])
    unsigned = sorted((k, v) for k, v in query if k != "X-Goog-Signature")
    fields = dict(unsigned)
    assert fields["X-Goog-SignedHeaders"] == "host"
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in unsigned
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = fields["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            fields["X-Goog-Algorithm"],
            fields["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


def url_times(url: str) -> tuple[datetime, int]:
    """When a V4 signed URL was signed, and for how many seconds it is valid."""
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    signed_at = datetime.strptime(fields["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed_at, int(fields["X-Goog-Expires"])

"""Google and mail clients, each created on first use and then reused.

Imports happen inside the factories so a function that never touches, say,
Storage does not pay for importing it at cold start. The libraries find the
emulators through the standard *_EMULATOR_HOST variables.
"""

from __future__ import annotations

import concurrent.futures
import functools
import smtplib
import ssl
import sys
from typing import TYPE_CHECKING, Any

from orderpally.config import settings

if TYPE_CHECKING:
    import google.cloud.pubsub_v1 as pubsub_v1
    import google.cloud.storage as storage
    from firebase_admin import App
    from google.auth.credentials import Signing
    from google.cloud import firestore


# No Firestore call may outlast this: an outage becomes a quick, retryable error
# (503 to HTTP callers, a redelivery for events) instead of a request hanging for minutes.
FIRESTORE_DEADLINE_SECONDS = 15.0


@functools.cache
def firestore_client() -> firestore.Client:
    from google.cloud import firestore

    client = firestore.Client(project=settings().project_id)
    _bound_firestore_deadlines(client, FIRESTORE_DEADLINE_SECONDS, settings().firestore_stream_deadline_seconds)
    return client


def _bound_firestore_deadlines(client: firestore.Client, seconds: float, stream_seconds: float) -> None:
    """Rewraps every RPC of the client's transport with a total deadline of `seconds`, and
    each streamed read with one of `stream_seconds`.

    The generated defaults retry an unavailable backend for up to five minutes on some
    calls (batch reads, queries). Our calls pass no retry or timeout of their own, so
    the transport's defaults are what applies.
    """
    from google.api_core import exceptions, gapic_v1
    from google.api_core import retry as retries

    transient = retries.if_exception_type(
        exceptions.ServiceUnavailable, exceptions.InternalServerError, exceptions.ResourceExhausted
    )
    transport = client._firestore_api._transport
    # A stream (query results, batch reads) may run long once it flows; its retries of a
    # backend that does not answer are bounded all the same. Where a client waits (HTTP
    # functions), a stream stuck on a connection that went silent ends in time for a 503.
    streams = {
        id(getattr(transport, name, None))
        for name in ("batch_get_documents", "run_query", "run_aggregation_query", "partition_query", "listen", "write")
    }
    for rpc in list(transport._wrapped_methods):
        transport._wrapped_methods[rpc] = gapic_v1.method.wrap_method(
            rpc,
            default_retry=retries.Retry(initial=0.1, maximum=2.0, multiplier=1.5, predicate=transient, timeout=seconds),
            default_timeout=stream_seconds if id(rpc) in streams else seconds,
            client_info=transport._client_info
            if hasattr(transport, "_client_info")
            else gapic_v1.client_info.DEFAULT_CLIENT_INFO,
        )


# A transaction cut off mid-way (connection reset) is closed server-side; a later call on it
# is refused with INVALID_ARGUMENT. That is the outage's doing, not the caller's: retry it all.
_LOST_TRANSACTION = ("transaction is invalid or closed", "transaction has expired", "no longer valid")


def transaction_contended(exc: BaseException) -> bool:
    """The transaction gave up (too busy) or was lost to a broken connection: retry, not a bug."""
    if isinstance(exc, ValueError) and str(exc).startswith("Failed to commit transaction"):
        return True
    from google.api_core.exceptions import Aborted, InvalidArgument

    if isinstance(exc, Aborted):  # a read inside the transaction waited too long for a lock
        return True

    message = str(exc).lower()
    return (
        isinstance(exc, InvalidArgument) and "transaction" in message and any(m in message for m in _LOST_TRANSACTION)
    )


def backend_unavailable(exc: BaseException) -> bool:
    """A failure of a backing service (down, slow, contended, cut off), worth a retry; not a bug.

    An error raised while handling such a failure is one too: when a transaction's begin is cut
    off, the library's rollback then raises `ValueError` ("no transaction ID") over it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if _backend_failure(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _backend_failure(exc: BaseException) -> bool:
    import requests
    from google.api_core import exceptions as gexc

    retryable = (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.RetryError,
        SigningUnavailable,
    )
    if isinstance(exc, (*retryable, ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout)):
        return True
    # Firebase Authentication's own errors (a session check, a user lookup); a function that
    # never imported firebase_admin cannot have raised them, so it is not imported here.
    firebase = sys.modules.get("firebase_admin.exceptions")
    if firebase is not None and isinstance(
        exc, (firebase.UnavailableError, firebase.DeadlineExceededError, firebase.InternalError)
    ):
        return True
    return transaction_contended(exc)


@functools.cache
def publisher() -> pubsub_v1.PublisherClient:
    import google.cloud.pubsub_v1 as pubsub_v1

    return pubsub_v1.PublisherClient()


@functools.cache
def while_a_client_waits() -> dict[str, Any]:
    """Keyword arguments for a Cloud Storage call made while an HTTP caller waits.

    The library retries for two minutes by default, past the function's own timeout,
    so the platform would answer first, without a problem document; these give up in
    about 20 s and the caller gets a 503 to retry.
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    return {"timeout": (3.05, 10.0), "retry": DEFAULT_RETRY.with_timeout(20.0)}


@functools.cache
def storage_client() -> storage.Client:
    import google.cloud.storage as storage

    cfg = settings()
    if "STORAGE_EMULATOR_HOST" in cfg.emulator_hosts:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=cfg.project_id, credentials=AnonymousCredentials())
    return storage.Client(project=cfg.project_id)


GOOGLE_STORAGE_ENDPOINT = "https://storage.googleapis.com"
GOOGLE_IAM_CREDENTIALS = "https://iamcredentials.googleapis.com"
SIGN_TIMEOUT = (3.05, 10.0)  # connect, read: a caller is waiting for the URL


class SigningUnavailable(Exception):
    """IAM Credentials did not sign just now (down, throttled, cut off): worth a retry."""


def storage_download_endpoint() -> str:
    """Where a signed URL points: the storage emulator locally, so a client can fetch it."""
    emulator = settings().emulator_hosts.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return GOOGLE_STORAGE_ENDPOINT
    return emulator.rstrip("/") if "://" in emulator else f"http://{emulator.rstrip('/')}"


@functools.cache
def url_signing_credentials() -> Signing:
    """Credentials whose `sign_bytes` is IAM Credentials signBlob as this function's own account.

    google.auth.iam.Signer's semantics (no private key in the function), with the endpoint from
    IAM_CREDENTIALS_BASE_URL so that the local stack's IAM stand-in signs, after checking the
    catalogue grants the function `self:roles/iam.serviceAccountTokenCreator`.
    """
    import base64

    import requests
    from google.auth import credentials as auth_credentials
    from google.auth import crypt

    cfg = settings()
    session: requests.Session
    email = cfg.service_account_email
    if cfg.uses_emulators:
        if not cfg.iam_credentials_base_url:
            raise RuntimeError("the local stack signs through its IAM stand-in: set IAM_CREDENTIALS_BASE_URL")
        session = requests.Session()  # the stand-in knows the function by its port, not by a token
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession, Request

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        email = email or getattr(credentials, "service_account_email", "")
        if email in ("", "default"):  # Compute credentials learn their email from the metadata server
            credentials.refresh(Request())
            email = credentials.service_account_email  # type: ignore[attr-defined]  # Compute credentials
        session = AuthorizedSession(credentials)
    if not email:
        raise RuntimeError("no service account to sign as: set SERVICE_ACCOUNT_EMAIL")
    url = f"{cfg.iam_credentials_base_url or GOOGLE_IAM_CREDENTIALS}/v1/projects/-/serviceAccounts/{email}:signBlob"

    class IamSigner(crypt.Signer):
        @property
        def key_id(self) -> str | None:
            return None  # IAM picks the key; a V4 signature does not name it

        def sign(self, message: str | bytes) -> bytes:
            payload = message.encode() if isinstance(message, str) else message
            try:
                answer = session.post(
                    url, json={"payload": base64.b64encode(payload).decode("ascii")}, timeout=SIGN_TIMEOUT
                )
            except requests.RequestException as exc:
                raise SigningUnavailable("IAM Credentials did not answer") from exc
            if answer.status_code == 429 or answer.status_code >= 500:
                raise SigningUnavailable(f"IAM Credentials answered {answer.status_code}")
            if answer.status_code != 200:
                # 401/403: the function lacks the grant; a deployment to fix, not a retry.
                raise RuntimeError(f"IAM Credentials refused to sign ({answer.status_code})")
            return base64.b64decode(answer.json()["signedBlob"])

    class IamSigningCredentials(auth_credentials.Signing):
        def __init__(self) -> None:
            self._signer = IamSigner()

        def sign_bytes(self, message: bytes) -> bytes:
            return self._signer.sign(message)

        @property
        def signer_email(self) -> str:
            return email

        @property
        def signer(self) -> crypt.Signer:
            return self._signer

    return IamSigningCredentials()


@functools.cache
def background() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for backend calls a request makes side by side (a session's two checks, a
    sign-in's cookie and account read); one pool per process, like the clients it calls."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="backend-call")


@functools.cache
def firebase_app() -> App:
    import firebase_admin

    try:
        return firebase_admin.get_app()
    except ValueError:
        return firebase_admin.initialize_app(options={"projectId": settings().project_id})


class SmtpTlsUnavailable(smtplib.SMTPException):
    """The relay offers no TLS: nothing may be sent in clear text, and a later try may find it back."""


def smtp_connection(timeout: float = 20.0) -> smtplib.SMTP:
    """A new, authenticated SMTP connection; TLS 1.2+ unless the local stack allows clear text.

    Not cached: SMTP servers drop idle connections, so each delivery opens its own.
    """
    cfg = settings()
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.smtp_security == "tls":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=timeout, context=context)
    else:
        conn = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout)
        if cfg.smtp_security == "starttls":
            try:
                conn.starttls(context=context)
            except smtplib.SMTPNotSupportedError:
                conn.close()
                raise SmtpTlsUnavailable("the relay does not offer STARTTLS") from None
    if cfg.smtp_username:
        conn.login(cfg.smtp_username, cfg.smtp_password)
    return conn

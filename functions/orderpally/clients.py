"""Google and mail clients, each created on first use and then reused.

Imports happen inside the factories so a function that never touches, say,
Storage does not pay for importing it at cold start. The libraries find the
emulators through the standard *_EMULATOR_HOST variables.
"""

from __future__ import annotations

import functools
import smtplib
import ssl
from typing import TYPE_CHECKING

from orderpally.config import settings

if TYPE_CHECKING:
    from firebase_admin import App
    from google.cloud import firestore, pubsub_v1, storage


@functools.cache
def firestore_client() -> firestore.Client:
    from google.cloud import firestore

    return firestore.Client(project=settings().project_id)


@functools.cache
def publisher() -> pubsub_v1.PublisherClient:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()


@functools.cache
def storage_client() -> storage.Client:
    from google.cloud import storage

    cfg = settings()
    if "STORAGE_EMULATOR_HOST" in cfg.emulator_hosts:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=cfg.project_id, credentials=AnonymousCredentials())
    return storage.Client(project=cfg.project_id)


@functools.cache
def firebase_app() -> App:
    import firebase_admin

    try:
        return firebase_admin.get_app()
    except ValueError:
        return firebase_admin.initialize_app(options={"projectId": settings().project_id})


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
            conn.starttls(context=context)
    if cfg.smtp_username:
        conn.login(cfg.smtp_username, cfg.smtp_password)
    return conn

"""All configuration, read from environment variables in one place.

Local defaults point at the emulators of the local stack; production gets its
values from Terraform. Production refuses to run against an emulator because
the Auth emulator does not verify token signatures.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

EMULATOR_VARIABLES = (
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
)

ENVIRONMENTS = ("local", "test", "staging", "production")


class ConfigurationError(RuntimeError):
    """The process must not start with this configuration."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer") from exc


@dataclass(frozen=True)
class Settings:
    environment: str = "local"
    project_id: str = "demo-orderpally"
    region: str = "asia-east1"
    version: str = "dev"
    # Emulator endpoints; empty in production.
    emulator_hosts: dict[str, str] = field(default_factory=dict)
    # Mail
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_security: str = "none"  # none (local only) | starttls | tls
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "OrderPally <no-reply@orderpally.local>"
    # Where customers read notices: links in mail and feeds start here.
    public_base_url: str = "http://localhost:8080"
    # Buckets
    backups_bucket: str = "demo-orderpally-backups"
    exports_bucket: str = "demo-orderpally-exports"
    attachments_bucket: str = "demo-orderpally-attachments"
    # Events older than this are dropped instead of retried, unless the
    # catalogue gives the function its own limit.
    default_max_event_age_seconds: int = 3600
    heartbeat_topic: str = "heartbeat"
    # Snapshots (clause 5.4)
    snapshot_max_age_hours: int = 26
    snapshot_scheduler_job: str = ""  # projects/<p>/locations/<r>/jobs/<name>; empty only off production
    local_backups_dir: str = ""  # where the Firestore emulator writes exports on the local stack
    # Keys the pseudonyms of retained records (clause 3.2(b)(i)); a secret in production.
    pseudonym_key: bytes = b"local-only-pseudonym-key-not-secret"
    # Account lifecycle (clause 3)
    termination_max_days_ahead: int = 90
    termination_reauth_seconds: int = 300
    company_termination_notice_days: int = 30
    export_valid_days: int = 7
    # Browser sessions
    frontend_origins: tuple[str, ...] = ("http://localhost:3000",)
    session_lifetime_seconds: int = 5 * 24 * 3600
    # How many proxies in front of the functions append to X-Forwarded-For
    # (the Google load balancer appends the client and its own address).
    trusted_proxy_hops: int = 0

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def uses_emulators(self) -> bool:
        return bool(self.emulator_hosts)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Builds settings from `env` (default: the process environment) and checks them."""
    env = dict(os.environ if env is None else env)
    environment = env.get("ENVIRONMENT", "local")
    if environment not in ENVIRONMENTS:
        raise ConfigurationError(f"ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}")
    emulators = {name: env[name] for name in EMULATOR_VARIABLES if env.get(name)}
    if environment == "production" and emulators:
        raise ConfigurationError(
            "production refuses to start with emulator variables set: " + ", ".join(sorted(emulators))
        )
    smtp_security = env.get("SMTP_SECURITY", "none" if environment in ("local", "test") else "starttls")
    if smtp_security not in ("none", "starttls", "tls"):
        raise ConfigurationError("SMTP_SECURITY must be none, starttls or tls")
    if smtp_security == "none" and environment not in ("local", "test"):
        raise ConfigurationError("mail is only sent in clear on the local stack")
    project_id = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or "demo-orderpally"
    return Settings(
        environment=environment,
        project_id=project_id,
        region=env.get("REGION", "asia-east1"),
        version=env.get("SERVICE_VERSION", env.get("K_REVISION", "dev")),
        emulator_hosts=emulators,
        smtp_host=env.get("SMTP_HOST", "127.0.0.1"),
        smtp_port=_int(env, "SMTP_PORT", 1025),
        smtp_security=smtp_security,
        smtp_username=env.get("SMTP_USERNAME", ""),
        smtp_password=env.get("SMTP_PASSWORD", ""),
        mail_from=env.get("MAIL_FROM", "OrderPally <no-reply@orderpally.local>"),
        public_base_url=env.get("PUBLIC_BASE_URL", "http://localhost:8080").rstrip("/"),
        backups_bucket=env.get("BACKUPS_BUCKET", f"{project_id}-backups"),
        exports_bucket=env.get("EXPORTS_BUCKET", f"{project_id}-exports"),
        attachments_bucket=env.get("ATTACHMENTS_BUCKET", f"{project_id}-attachments"),
        default_max_event_age_seconds=_int(env, "MAX_EVENT_AGE_SECONDS", 3600),
        heartbeat_topic=env.get("HEARTBEAT_TOPIC", "heartbeat"),
        snapshot_max_age_hours=_int(env, "SNAPSHOT_MAX_AGE_HOURS", 26),
        snapshot_scheduler_job=env.get("SNAPSHOT_SCHEDULER_JOB", ""),
        local_backups_dir=env.get("LOCAL_BACKUPS_DIR", ""),
        pseudonym_key=_secret(env, "PSEUDONYM_KEY", environment, b"local-only-pseudonym-key-not-secret"),
        termination_max_days_ahead=_int(env, "TERMINATION_MAX_DAYS_AHEAD", 90),
        termination_reauth_seconds=_int(env, "TERMINATION_REAUTH_SECONDS", 300),
        company_termination_notice_days=_int(env, "COMPANY_TERMINATION_NOTICE_DAYS", 30),
        export_valid_days=_int(env, "EXPORT_VALID_DAYS", 7),
        frontend_origins=_origins(env.get("FRONTEND_ORIGINS", "http://localhost:3000")),
        session_lifetime_seconds=_session_lifetime(env),
        trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 0 if environment in ("local", "test") else 2),
    )


def _secret(env: dict[str, str], name: str, environment: str, local_default: bytes) -> bytes:
    """A secret from Secret Manager (mounted as a variable); only local stacks may use the default."""
    raw = env.get(name, "")
    if not raw:
        if environment in ("local", "test"):
            return local_default
        raise ConfigurationError(f"{name} must be set outside the local stack")
    if len(raw) < 32:
        raise ConfigurationError(f"{name} must be at least 32 characters")
    return raw.encode()


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not origin.startswith(("https://", "http://localhost", "http://127.0.0.1")):
            raise ConfigurationError("FRONTEND_ORIGINS must be https origins (http only for localhost)")
    return origins


def _session_lifetime(env: dict[str, str]) -> int:
    # Firebase session cookies live between 5 minutes and 14 days.
    value = _int(env, "SESSION_LIFETIME_SECONDS", 5 * 24 * 3600)
    if not 300 <= value <= 14 * 24 * 3600:
        raise ConfigurationError("SESSION_LIFETIME_SECONDS must be between 300 and 1209600")
    return value


@functools.cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()

"""All configuration, read from environment variables in one place.

Local defaults point at the emulators of the local stack; production gets its
values from Terraform. Production refuses to run against an emulator because
the Auth emulator does not verify token signatures.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass

EMULATOR_VARIABLES = (
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
)

ENVIRONMENTS = ("local", "test", "staging", "production")


# The frontends of the local stack: localhost and 127.0.0.1 are different sites to a browser.
DEFAULT_FRONTEND_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


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
    """What a function runs with, built only by load_settings (which holds the defaults)."""

    environment: str
    # The fault suite's crash points (orderpally.events.inject_fault): local and test stacks only.
    fault_points: bool
    project_id: str
    region: str
    version: str
    # Emulator endpoints; empty in production.
    emulator_hosts: dict[str, str]
    # Mail
    smtp_host: str
    smtp_port: int
    smtp_security: str  # none (local only) | starttls | tls
    smtp_username: str
    smtp_password: str
    mail_from: str
    # Where customers read notices: links in mail and feeds start here.
    public_base_url: str
    # Buckets
    backups_bucket: str
    exports_bucket: str
    attachments_bucket: str
    # Events older than this are dropped instead of retried, unless the
    # catalogue gives the function its own limit.
    default_max_event_age_seconds: int
    # How long one streamed Firestore read (a query, a batch get) may last: long for builds and
    # schedules, short where a client waits (HTTP functions get it from Terraform).
    firestore_stream_deadline_seconds: int
    heartbeat_topic: str
    # Snapshots (clause 5.4)
    snapshot_max_age_hours: int
    snapshot_scheduler_job: str  # projects/<p>/locations/<r>/jobs/<name>; empty only off production
    local_backups_dir: str  # where the Firestore emulator writes exports on the local stack
    # The Cloud KMS key version that signs audit checkpoints (projects/.../cryptoKeyVersions/N),
    # and where Cloud KMS is: empty for Google's; the local stack's IAM proxy stands in for it.
    checkpoint_signing_key: str
    cloudkms_base_url: str
    # How long each snapshot is kept: the backups bucket's retention policy and lifecycle age
    # (terraform var.backup_retention_days), for the trust report.
    backup_retention_days: int
    # Encryption at rest of each store the data map names ("firestore", "backups", "exports",
    # "attachments"), as Terraform set it up: {"key": <Cloud KMS key name>, "rotation_period":
    # "<seconds>s"} or {"managed_by": "google"}; a store not named is reported as not configured.
    encryption_at_rest: dict[str, dict[str, str]]
    # Secret Manager values mounted on this function (each function gets only the ones the
    # catalogue names), by variable name; read through secret(), which refuses a missing one.
    secrets: dict[str, bytes]
    # Identity Platform: the web API key of the project, and where its REST API is.
    firebase_web_api_key: str
    identity_toolkit_url: str
    # Facebook sign-in (clause 5.1)
    facebook_app_id: str
    facebook_dialog_url: str
    facebook_graph_url: str
    facebook_timeout_seconds: float
    facebook_redirect_uri: str  # where Facebook sends the browser back: <public base>/auth/facebook/callback
    # Account lifecycle (clause 3)
    termination_max_days_ahead: int
    termination_reauth_seconds: int
    company_termination_notice_days: int
    export_valid_days: int
    # Security incidents (clauses 5.6, 5.7)
    security_oncall_email: str
    security_contact_email: str
    incident_deadlines: str  # critical=1/24,high=4/72,... hours; empty: the defaults
    incident_warn_minutes: int
    # Longer than an intake request may run, so a retry never races the request it retries.
    incident_intake_lease_seconds: int
    # Overrides of the built-in rate limits, by name: {"sign-in-address": (attempts, window seconds)}.
    rate_limits: dict[str, tuple[int, int]]
    # Signing download URLs (V4) as the function's own service account, through IAM Credentials
    # signBlob: empty means Google's endpoint; the local stack points it at its IAM stand-in.
    iam_credentials_base_url: str
    # The account that signs; empty in production, where the metadata server names it.
    service_account_email: str
    # Browser sessions
    frontend_origins: tuple[str, ...]
    session_lifetime_seconds: int
    # How many proxies in front of the functions append to X-Forwarded-For (the Google load
    # balancer appends the client and its own address; the local gateway does the same). A
    # request that did not come through them (a test calling a function's port) has no address.
    trusted_proxy_hops: int

    def secret(self, name: str) -> bytes:
        """A mounted secret; the local stack falls back to a fixed, non-secret value."""
        value = self.secrets.get(name)
        if value:
            return value
        if self.environment in ("local", "test"):
            return f"local-only-{name.lower()}-not-a-secret".encode()
        raise ConfigurationError(f"{name} must be mounted on this function (catalogue `secrets`)")

    @property
    def pseudonym_key(self) -> bytes:
        """Keys the pseudonyms of retained records (clause 3.2(b)(i))."""
        return self.secret("PSEUDONYM_KEY")

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
    fault_points = env.get("FAULT_POINTS", "") == "on"
    if fault_points and environment not in ("local", "test"):
        raise ConfigurationError("FAULT_POINTS is for the local stack's fault tests only")
    project_id = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or "demo-orderpally"
    loaded = Settings(
        fault_points=fault_points,
        environment=environment,
        project_id=project_id,
        region=env.get("REGION", "asia-east1"),
        version=env.get("SERVICE_VERSION", env.get("K_REVISION", "dev")),
        emulator_hosts=emulators,
        smtp_host=env.get("SMTP_HOST", "127.0.0.1"),
        smtp_port=_port(env, "SMTP_PORT", 1025),
        smtp_security=smtp_security,
        smtp_username=env.get("SMTP_USERNAME", ""),
        smtp_password=env.get("SMTP_PASSWORD", ""),
        mail_from=env.get("MAIL_FROM", "OrderPally <no-reply@orderpally.local>"),
        public_base_url=env.get("PUBLIC_BASE_URL", "http://localhost:8080").rstrip("/"),
        backups_bucket=env.get("BACKUPS_BUCKET", f"{project_id}-backups"),
        exports_bucket=env.get("EXPORTS_BUCKET", f"{project_id}-exports"),
        attachments_bucket=env.get("ATTACHMENTS_BUCKET", f"{project_id}-attachments"),
        default_max_event_age_seconds=_positive(env, "MAX_EVENT_AGE_SECONDS", 3600),
        firestore_stream_deadline_seconds=_positive(env, "FIRESTORE_STREAM_DEADLINE_SECONDS", 300),
        heartbeat_topic=env.get("HEARTBEAT_TOPIC", "heartbeat"),
        snapshot_max_age_hours=_positive(env, "SNAPSHOT_MAX_AGE_HOURS", 26),
        snapshot_scheduler_job=env.get("SNAPSHOT_SCHEDULER_JOB", ""),
        local_backups_dir=env.get("LOCAL_BACKUPS_DIR", ""),
        checkpoint_signing_key=_kms_key_version(env.get("CHECKPOINT_SIGNING_KEY", "")),
        cloudkms_base_url=_google_api_base_url(env, "CLOUDKMS_BASE_URL", environment),
        backup_retention_days=_positive(env, "BACKUP_RETENTION_DAYS", 7),
        encryption_at_rest=_encryption_at_rest(env.get("ENCRYPTION_AT_REST", "")),
        secrets=_secrets(env),
        firebase_web_api_key=env.get("FIREBASE_WEB_API_KEY", "local-emulator-key"),
        identity_toolkit_url=_identity_toolkit_url(env),
        facebook_app_id=env.get("FACEBOOK_APP_ID", ""),
        facebook_dialog_url=env.get("FACEBOOK_DIALOG_URL", "https://www.facebook.com/v19.0/dialog/oauth"),
        facebook_graph_url=env.get("FACEBOOK_GRAPH_URL", "https://graph.facebook.com/v19.0").rstrip("/"),
        facebook_timeout_seconds=_seconds(env, "FACEBOOK_TIMEOUT_SECONDS", 5.0),
        facebook_redirect_uri=env.get("FACEBOOK_REDIRECT_URI")
        or env.get("PUBLIC_BASE_URL", "http://localhost:8080").rstrip("/") + "/auth/facebook/callback",
        termination_max_days_ahead=_positive(env, "TERMINATION_MAX_DAYS_AHEAD", 90),
        termination_reauth_seconds=_positive(env, "TERMINATION_REAUTH_SECONDS", 300),
        company_termination_notice_days=_positive(env, "COMPANY_TERMINATION_NOTICE_DAYS", 30),
        export_valid_days=_positive(env, "EXPORT_VALID_DAYS", 7),
        security_oncall_email=env.get("SECURITY_ONCALL_EMAIL", "security-oncall@orderpally.example"),
        security_contact_email=env.get("SECURITY_CONTACT_EMAIL", "security@orderpally.example"),
        incident_deadlines=_incident_deadlines(env.get("INCIDENT_DEADLINES", "")),
        incident_warn_minutes=_positive(env, "INCIDENT_WARN_MINUTES", 60),
        incident_intake_lease_seconds=_positive(env, "INCIDENT_INTAKE_LEASE_SECONDS", 180),
        rate_limits=_rate_limits(env.get("RATE_LIMITS", "")),
        iam_credentials_base_url=_google_api_base_url(env, "IAM_CREDENTIALS_BASE_URL", environment),
        service_account_email=_service_account_email(env, project_id, emulators),
        frontend_origins=_origins(env.get("FRONTEND_ORIGINS", ",".join(DEFAULT_FRONTEND_ORIGINS))),
        session_lifetime_seconds=_session_lifetime(env),
        trusted_proxy_hops=_at_least(env, "TRUSTED_PROXY_HOPS", 2, 0),
    )
    _require_deployed_settings(env, environment)
    return loaded


# Settings whose local default points at the local stack or a placeholder (a Web API key the
# Auth emulator takes, localhost links, demo buckets and addresses): a deployed function refuses
# to start without them. Terraform gives every function each of them (functions.tf common_env);
# tests/infra/test_terraform_first_apply.py holds the two lists together.
PRODUCTION_REQUIRED = (
    "GOOGLE_CLOUD_PROJECT",
    "FIREBASE_WEB_API_KEY",
    "PUBLIC_BASE_URL",
    "FRONTEND_ORIGINS",
    "MAIL_FROM",
    "SMTP_HOST",
    "SMTP_PORT",
    "BACKUPS_BUCKET",
    "EXPORTS_BUCKET",
    "ATTACHMENTS_BUCKET",
    "SECURITY_ONCALL_EMAIL",
    "SECURITY_CONTACT_EMAIL",
    "SNAPSHOT_SCHEDULER_JOB",
    "BACKUP_RETENTION_DAYS",  # the trust report states it; a default would state a guess
    "ENCRYPTION_AT_REST",
    "CHECKPOINT_SIGNING_KEY",  # a local key would sign what customers are told KMS signed
)


def _require_deployed_settings(env: dict[str, str], environment: str) -> None:
    if environment in ("local", "test"):
        return
    missing = [name for name in PRODUCTION_REQUIRED if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(f"{environment} refuses to start on local defaults; set " + ", ".join(missing))


# Secrets the code knows, each mounted only on the functions that use it.
SECRET_VARIABLES = ("PSEUDONYM_KEY", "API_KEY_PEPPER", "FACEBOOK_APP_SECRET")


def _secrets(env: dict[str, str]) -> dict[str, bytes]:
    found = {}
    for name in SECRET_VARIABLES:
        raw = env.get(name, "")
        if raw and len(raw) < 32:
            raise ConfigurationError(f"{name} must be at least 32 characters")
        if raw:
            found[name] = raw.encode()
    return found


_KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_ROTATION_PERIOD = re.compile(r"[0-9]{1,10}s")


_KMS_KEY_VERSION = re.compile(_KMS_KEY.pattern + r"/cryptoKeyVersions/[0-9]+")


def _kms_key_version(raw: str) -> str:
    if raw and not _KMS_KEY_VERSION.fullmatch(raw):
        raise ConfigurationError("CHECKPOINT_SIGNING_KEY must name a Cloud KMS key version")
    return raw


def _encryption_at_rest(raw: str) -> dict[str, dict[str, str]]:
    """`{"backups": {"key": "projects/.../cryptoKeys/k", "rotation_period": "7776000s"},
    "firestore": {"managed_by": "google"}}`, as Terraform writes it (jsonencode); empty: none known."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError("ENCRYPTION_AT_REST must be a JSON object") from exc
    if not isinstance(parsed, dict):
        raise ConfigurationError("ENCRYPTION_AT_REST must be a JSON object")
    for store, entry in parsed.items():
        google = entry == {"managed_by": "google"}
        customer = (
            isinstance(entry, dict)
            and set(entry) == {"key", "rotation_period"}
            and _KMS_KEY.fullmatch(str(entry["key"]))
            and _ROTATION_PERIOD.fullmatch(str(entry["rotation_period"]))
        )
        if not (google or customer):
            raise ConfigurationError(
                f"ENCRYPTION_AT_REST: {store} needs a Cloud KMS key and its rotation period, or managed_by google"
            )
    return parsed


def _identity_toolkit_url(env: dict[str, str]) -> str:
    emulator = env.get("FIREBASE_AUTH_EMULATOR_HOST")
    if emulator:
        return f"http://{emulator}/identitytoolkit.googleapis.com"
    return env.get("IDENTITY_TOOLKIT_URL", "https://identitytoolkit.googleapis.com").rstrip("/")


def _google_api_base_url(env: dict[str, str], name: str, environment: str) -> str:
    url = env.get(name, "").rstrip("/")
    # Signing requests carry the function's access token: never in clear text outside the local stack.
    if url and not url.startswith("https://") and environment not in ("local", "test"):
        raise ConfigurationError(f"{name} must be https outside the local stack")
    return url


def _service_account_email(env: dict[str, str], project_id: str, emulators: dict[str, str]) -> str:
    if env.get("SERVICE_ACCOUNT_EMAIL"):
        return env["SERVICE_ACCOUNT_EMAIL"]
    if emulators and env.get("K_SERVICE"):
        # No metadata server locally: the account Terraform gives this function (service_accounts.tf).
        account_id = f"fn-{env['K_SERVICE']}"[:30]
        return f"{account_id}@{project_id}.iam.gserviceaccount.com"
    return ""


def _at_least(env: dict[str, str], name: str, default: int, lowest: int) -> int:
    value = _int(env, name, default)
    if value < lowest:
        raise ConfigurationError(f"{name} must be at least {lowest}")
    return value


def _positive(env: dict[str, str], name: str, default: int) -> int:
    return _at_least(env, name, default, 1)


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = _positive(env, name, default)
    if value > 65535:
        raise ConfigurationError(f"{name} must be a TCP port (1-65535)")
    return value


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number of seconds") from exc
    if not 0 < value <= 300:  # also refuses nan and inf
        raise ConfigurationError(f"{name} must be more than 0 and at most 300 seconds")
    return value


def _rate_limits(raw: str) -> dict[str, tuple[int, int]]:
    """`sign-in-address=30/600,incident-address=5/3600`: attempts per window in seconds."""
    limits = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = part.partition("=")
        attempts, _, seconds = value.partition("/")
        if not name or not attempts.isdigit() or not seconds.isdigit() or int(seconds) < 1:
            raise ConfigurationError(f"RATE_LIMITS: bad entry {part!r}")
        limits[name] = (int(attempts), int(seconds))
    return limits


# `critical=1/24,high=4/72`: hours to first response / to resolution, per severity. The shape
# is checked here, at start-up; the severity names by the incidents capability that reads it.
_DEADLINE_ENTRY = re.compile(r"[a-z]+=([0-9]{1,6})/([0-9]{1,6})")


def _incident_deadlines(raw: str) -> str:
    for part in filter(None, (p.strip() for p in raw.split(","))):
        entry = _DEADLINE_ENTRY.fullmatch(part)
        if not entry or int(entry.group(1)) > int(entry.group(2)):
            raise ConfigurationError(f"INCIDENT_DEADLINES: bad entry {part!r}")
    return raw


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

"""Lapse's one settings object, read from ``LAPSE_*`` environment variables or ``.env``."""

from __future__ import annotations

import ipaddress
import json
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from access.durations import Duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    """Where the embedded Temporal server and the SQLite app DB keep their files."""
    database_url: str | None = None
    """SQLAlchemy URL of the app DB; default ``sqlite:///<data_dir>/lapse.db``."""

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    """Client certificate (PEM) for mTLS, e.g. Temporal Cloud."""
    temporal_tls_key: Path | None = None
    temporal_api_key: str | None = None
    task_queue: str = "lapse"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_ui_port: int = 8233
    embedded_temporal: bool = True
    """``lapse run`` starts a Temporal dev server; turn off to use ``temporal_address``."""

    auth: Literal["oidc", "proxy"] = "oidc"
    """How people sign in: ``oidc`` (sessions after an OpenID Connect sign-in, and API tokens), or ``proxy``: an SSO
    proxy in front of Lapse names the user in ``X-Forwarded-Email`` (trusted from ``trusted_proxies`` only)."""
    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Addresses and networks (``10.0.0.5``, ``10.0.0.0/24``) whose ``X-Forwarded-Email`` header is believed in
    ``proxy`` mode; the header from any other address is ignored. Empty: believed from nobody. A JSON list or
    comma-separated."""
    public_url: str | None = None
    """The URL people reach Lapse at (``https://lapse.example.com``): the sign-in's redirects, allowed browser
    origins, and ``Secure`` cookies when it is https. Default: ``http://api_host:api_port``."""
    session_idle: Duration = Field(default=timedelta(hours=8))
    """A browser session unused for this long ends (sign in again)."""
    session_max: Duration = Field(default=timedelta(days=1))
    """A browser session ends this long after its sign-in, however much it is used."""
    token_max_lifetime: Duration = Field(default=timedelta(days=365))
    """The longest an API token may be valid for."""
    token_default_lifetime: Duration = Field(default=timedelta(days=90))
    """How long an API token is valid for when its creator does not say."""
    device_token_lifetime: Duration = Field(default=timedelta(days=30))
    """How long the token ``lapse login`` gets through a browser (the device sign-in) is valid for: shorter than
    others', since one click on a link sent by someone else must not hand them months of access."""

    approval_timeout: Duration = Field(default=timedelta(hours=24))
    """A request with no decision for this long ends as ``timed_out``."""
    submit_timeout: Duration = Field(default=timedelta(seconds=30))
    """How long the API waits for a worker to record a new request, or to answer a decision, an extension or a
    revoke, before answering 503."""
    max_pending_submits: int = Field(default=16, ge=1)
    """Requests one API process starts at once, each waiting on a worker to record it; beyond these, a new
    request is refused with 503 and ``Retry-After`` (nothing started) instead of queueing behind them."""
    admission_wait: timedelta = timedelta(milliseconds=500)
    max_pending_per_requester: int = Field(default=20, ge=0)
    """Requests one person (admins and service accounts too) may have awaiting approval at once; beyond these a
    new one is refused with 429 and ``Retry-After``, so that nobody floods the approvers. Emergency (break-glass)
    requests are not counted nor capped (one per role at a time). 0: no cap."""
    sticky_timeout: Duration = Field(default=timedelta(seconds=3))
    """How long a worker's cached workflow tasks wait for it before another worker replays them. Short
    hands a dead worker's grants on quickly; too short, and a busy worker's tasks time out and run twice,
    which under load is what collapses throughput (measured in bench/RESULTS.md)."""
    """How long a new request may wait for one of those places before it is refused."""
    directory_sync_every: Duration = Field(default=timedelta(minutes=15))
    """How often the directory sync pulls users, groups and memberships from the identity source."""
    directory_max_leavers: float = Field(default=0.2, gt=0, le=1)
    """A directory sync that would make more than this share of a source's active users leavers at once is
    refused (a wrong filter or an emptied OU, far more likely than an exodus)."""
    birthright_sync_every: Duration = Field(default=timedelta(days=1))
    """How often the birthright sync runs on its own (policy and group changes also start it at once)."""
    backstop_every: Duration = Field(default=timedelta(minutes=1))
    """How often the expiry backstop looks for grants past their end that their request's run is not revoking."""
    backstop_grace: Duration = Field(default=timedelta(minutes=2))
    """How long past its end a grant may stay before the backstop revokes it itself (the run revokes on time
    unless it is gone or stuck)."""
    org_file: Path | None = None
    """Organisation file loaded on first start; default: the bundled demo organisation."""
    demo_pg_dsn: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres", json_schema_extra={"integration_secret": True}
    )
    """With the demo organisation, a PostgreSQL that answers here becomes the ``demo-pg`` integration
    (``off`` to skip). Workers read it from the environment, like any integration's secret: the one setting
    an integration's ``*_env`` may name (marked ``integration_secret``)."""
    demo_mail_port: int = Field(default=2525, ge=0, le=65535)
    """With the demo organisation, ``lapse run`` catches the email Lapse sends on this port of 127.0.0.1 (0: any
    free port), keeping each message as a file in ``<data_dir>/mail`` (``activities/notify/catcher.py``)."""
    secret_env_prefix: str = Field(default="LAPSE_", min_length=1)
    """Integrations' ``*_env`` references may only name environment variables starting with this, and never
    one Lapse's own settings read (``LAPSE_SECRET_KEY``, ``LAPSE_DATABASE_URL``, … except ``demo_pg_dsn``)."""
    secrets_dir: Path | None = None
    """Integrations' ``*_file`` references (and ``ca_file``) may only name files inside this directory, after
    resolving symlinks and ``..``; default ``<data_dir>/secrets``."""
    integration_hosts: list[str] = []
    """Host patterns (``fnmatch``, e.g. ``["db.example.com", "*.corp.example.com"]``) integrations may connect
    to; empty: any. Set it so that no admin can point an integration, and the secret it names, elsewhere."""
    secret_key: SecretStr | None = None
    """Fernet key sealing one-time credentials until their requester fetches them; default: a key file
    ``secret.key`` in ``data_dir``, made on first use. Set it when the API and workers share no disk."""
    audit_key: SecretStr | None = None
    """Keys that MAC the audit chain (HMAC-SHA256), as ``kid:base64key`` entries (32+ bytes) separated by
    commas: the first MACs new events, all verify (rotate by putting a new key first; keep the old ones as
    long as their events must verify). Default: ``audit.key`` in ``data_dir``, made (mode 0600) on first use.
    Keep it off the app DB's host and backups; the API and the workers must share it."""
    audit_refusal_window: float = Field(default=60.0, ge=0, le=86400)
    """Seconds during which identical refusals (same caller, action, target and reason) after the first
    are counted instead of each writing an audit event; one event with their count follows. 0: no coalescing."""
    audit_checkpoint_every: Duration = Field(default=timedelta(minutes=5))
    """How often the scheduled ``audit-checkpoint`` workflow records the audit log's head in Temporal."""
    codec_key: SecretStr | None = None
    """Keys that encrypt and authenticate every Temporal payload (AES-256-GCM), as ``kid:base64key`` entries
    separated by commas: the first encrypts, all decrypt (rotate by putting a new key first and dropping the
    old one once no open run uses it). Default: ``codec_key_file``, else ``codec.key`` in ``data_dir``, made
    (mode 0600) on first use. The API, the workers and the CLI must share it."""
    codec_key_file: Path | None = None
    """A file holding the ``codec_key`` entries (one per line or comma-separated), e.g. a mounted secret."""
    codec_accept_plaintext: bool = False
    """Migration window only: let workers and clients read unencrypted payloads, i.e. runs started before the
    codec. Anyone who can reach Temporal can then forge input: turn it off once those runs have closed."""
    codec_ui_origins: list[str] = []
    """Origins allowed to call ``/codec/*`` from a browser (the Temporal Web UI); default: the embedded UI's
    ``http://localhost:<temporal_ui_port>`` and ``http://127.0.0.1:<temporal_ui_port>``."""

    # --- running in production: health, metrics, logs, shutdown (``lapse api``, ``lapse worker``, ``lapse migrate``)
    ops_host: str = "127.0.0.1"
    """Where a worker's ops HTTP port (``/healthz``, ``/readyz``, ``/metrics``) listens: ``0.0.0.0`` for a
    Prometheus on another host (the port serves nothing else)."""
    ops_port: int = Field(default=9464, ge=0, le=65535)
    """A worker's ops HTTP port; 0: none. Several workers on one host need one each."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line (``ts``, ``level``, ``logger``, ``process``, ``msg``, and ``request_id``,
    ``workflow_id``, ``integration``, ``actor`` where known), for a log shipper."""
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    """The lowest level logged: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``."""
    shutdown_grace: Duration = Field(default=timedelta(seconds=30))
    """On SIGTERM a worker stops taking work and lets the activities it runs finish for up to this long before
    cancelling them (Temporal retries a cancelled one elsewhere); the API lets its requests finish as long."""
    max_cached_workflows: int = Field(default=1000, ge=0, le=100_000)
    """Workflow runs a worker keeps in memory between their steps (Temporal's sticky cache). What a worker's memory
    grows to (about 0.5 MiB a run, bench/RESULTS.md), not how many grants it holds: a sleeping grant pushed out
    is replayed from its history when it wakes. 0: none kept (every step replays)."""
    metrics_token: SecretStr | None = None
    """When set, the API's ``/metrics`` answers only ``Authorization: Bearer <this>``; when not, only callers
    from the loopback address (not through a proxy) or ``metrics_networks``."""
    metrics_networks: Annotated[list[str], NoDecode] = []
    """Addresses and networks (``10.0.0.0/24``) that may read the API's ``/metrics`` without the token; a JSON
    list or comma-separated."""
    worker_notifies: bool = True
    """Each ``lapse worker`` also sends the notification outbox and runs the expiring-soon scan. Off when
    ``lapse notifier`` processes do that instead, so that sending shares no CPU with the workflows
    (docs/production.md, "Notifications")."""
    migrate_on_start: bool = True
    """``lapse api``, ``lapse worker`` and ``lapse notifier`` bring the app DB's schema to the latest migration as
    they start (one at a time, under a lock); off: the operator runs ``lapse migrate`` before starting new
    versions."""

    @field_validator("trusted_proxies", "metrics_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [part for part in text.split(",") if part.strip()]
        if isinstance(value, list):
            for entry in value:
                try:
                    ipaddress.ip_network(str(entry).strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network (10.0.0.5, 10.0.0.0/24)") from None
            return [str(entry).strip() for entry in value]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an http(s) URL such as https://lapse.example.com")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _lifetimes(self) -> Settings:
        if self.token_default_lifetime > self.token_max_lifetime:
            raise ValueError("token_default_lifetime is longer than token_max_lifetime")
        if self.device_token_lifetime > self.token_max_lifetime:
            raise ValueError("device_token_lifetime is longer than token_max_lifetime")
        if self.session_idle > self.session_max:
            raise ValueError("session_idle is longer than session_max: a session would end at session_max anyway")
        return self

    @property
    def external_url(self) -> str:
        """The URL people reach Lapse at: ``public_url``, else where the API listens."""
        return self.public_url or self.api_url

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lapse.db').resolve()}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    # --- OIDC sign-in (``auth = "oidc"``): the identity provider people sign in with (starter/services/oidc.py)
    oidc_issuer: str | None = None
    """The identity provider's issuer URL, exactly as its ID tokens name it (``<issuer>/.well-known/openid-
    configuration`` is its discovery document): ``https://``, or ``http://`` to a loopback address only. Unset,
    ``lapse run`` starts a local demo provider and points Lapse at it."""
    oidc_client_id: str | None = Field(default=None, min_length=1, max_length=255)
    """Lapse's client id at the identity provider (required with ``oidc_issuer``)."""
    oidc_client_secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding Lapse's client secret: a reference, read on use and never logged; the
    variable is then out of reach of integrations' ``*_env`` references. Neither this nor
    ``oidc_client_secret_file``: a public client (PKCE only)."""
    oidc_client_secret_file: Path | None = None
    """A file holding Lapse's client secret (a mounted secret), read on use; integrations may never name it."""
    oidc_user_claim: str = Field(default="email", pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")
    """The ID token claim matched (case-insensitively) to a Lapse user's email: ``email``, or e.g.
    ``preferred_username`` where the provider's email claim is not verified (Entra ID)."""
    oidc_scopes: str = Field(default="openid email profile", max_length=512)
    """The scopes Lapse asks for, separated by spaces; ``openid`` is required."""
    oidc_trust_unverified_email: bool = False
    """Matching on the ``email`` claim, let someone in whose ID token does not say ``email_verified: true``. Off:
    at providers where anyone may give their account any address, an unverified email names nobody (nOAuth).
    Turn it on only for a provider that sets every address itself and never sends ``email_verified``."""

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer_is_a_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("the issuer is a URL such as https://login.example.com (no query, no fragment)")
        if parts.scheme == "http" and not loopback:
            raise ValueError("the issuer must be https:// (http:// only on this machine's loopback address)")
        return value

    @field_validator("oidc_scopes")
    @classmethod
    def _oidc_scopes_include_openid(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("the scopes must include openid")
        return " ".join(value.split())

    @model_validator(mode="after")
    def _oidc_client_is_complete(self) -> Settings:
        if self.oidc_issuer is not None and self.oidc_client_id is None:
            raise ValueError("oidc_issuer is set but oidc_client_id is not: give Lapse's client id at the provider")
        if self.oidc_client_secret_env is not None and self.oidc_client_secret_file is not None:
            raise ValueError("set at most one of oidc_client_secret_env and oidc_client_secret_file")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()

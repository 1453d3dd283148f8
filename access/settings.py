"""Lapse's one settings object, read from ``LAPSE_*`` environment variables or ``.env``."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    approval_timeout: Duration = Field(default=timedelta(hours=24))
    """A request with no decision for this long ends as ``timed_out``."""
    submit_timeout: Duration = Field(default=timedelta(seconds=30))
    """How long the API waits for a worker to record a new request before answering 503."""
    directory_sync_every: Duration = Field(default=timedelta(minutes=15))
    """How often the directory sync pulls users, groups and memberships from the identity source."""
    directory_max_leavers: float = Field(default=0.2, gt=0, le=1)
    """A directory sync that would make more than this share of a source's active users leavers at once is
    refused (a wrong filter or an emptied OU, far more likely than an exodus)."""
    birthright_sync_every: Duration = Field(default=timedelta(days=1))
    """How often the birthright sync runs on its own (policy and group changes also start it at once)."""
    org_file: Path | None = None
    """Organisation file loaded on first start; default: the bundled demo organisation."""
    demo_pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """With the demo organisation, a PostgreSQL that answers here becomes the ``demo-pg`` integration
    (``off`` to skip). Workers read it from the environment, like any integration's secret."""
    secret_key: SecretStr | None = None
    """Fernet key sealing one-time credentials until their requester fetches them; default: a key file
    ``secret.key`` in ``data_dir``, made on first use. Set it when the API and workers share no disk."""

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lapse.db').resolve()}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

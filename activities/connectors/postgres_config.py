"""A PostgreSQL integration's settings, and the TLS rule its connection string must follow.

Verified TLS (``sslmode=verify-full``) over TCP, a Unix socket as it is, anything else only with
``insecure: true``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import conninfo
from pydantic import model_validator

from access.connectors import ConnectorConfig, PermanentError
from activities.connectors.secrets import EnvName, SecretFile, check_host, secret, secret_policy


class PostgresConfig(ConnectorConfig):
    """An integration's settings. The DSN is a reference (an env var or a file), never the secret."""

    dsn_env: EnvName | None = None
    """Name of the environment variable holding the connection string."""
    dsn_file: SecretFile | None = None
    """A file holding the connection string (e.g. a mounted secret), inside the secrets directory."""
    ca_file: SecretFile | None = None
    """The CA certificate (PEM) the server's certificate must chain to, inside the secrets directory;
    default: the DSN's ``sslrootcert``, else the system's trusted roots."""
    allow_privileged: list[str] = []
    """Privileged roles (SUPERUSER, CREATEROLE, CREATEDB, BYPASSRLS, REPLICATION, the server-file and
    server-program roles, or a member of one) that may still be discovered and granted, by name; each is
    catalogued with a warning. Any other privileged role is never requestable."""
    create_accounts: bool = False
    """Create a LOGIN role for a user who has no account yet, on first grant."""
    role_prefix: str = ""
    """Discover only NOLOGIN roles whose name starts with this."""
    resource: str | None = None
    """The resource the roles are catalogued under; default: the database the DSN names."""
    ephemeral: bool = False
    """Ephemeral credentials: each grant creates a login role with a random password, valid until the
    grant's end, shown once to the requester and dropped at revoke (``create_accounts`` is moot)."""

    @model_validator(mode="after")
    def _one_source(self) -> PostgresConfig:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env or dsn_file")
        return self

    def dsn(self) -> str:
        return secret(env=self.dsn_env, file=self.dsn_file, what="the connection string", field="dsn")

    def connection_options(self, dsn: str) -> dict[str, str]:
        """Extra libpq options that make the connection verified TLS (``sslmode=verify-full``), or a
        PermanentError when the DSN asks for less without ``insecure: true``.

        TCP targets, loopback included, need verified TLS; a Unix-domain socket (a host that is a
        directory, or no host at all) carries no TLS in PostgreSQL and never leaves the machine, so it is
        accepted as it is. With ``insecure: true`` the DSN is used as written."""
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except (psycopg.ProgrammingError, UnicodeDecodeError) as error:
            raise PermanentError(f"the connection string ({self._source()}) is malformed: {error}".strip()) from None
        for host in _tcp_hosts(params):
            check_host(host, field=f"the host in {self._source()}")
        if self.insecure or not _over_tcp(params):
            return {"sslrootcert": self._ca_path()} if self.ca_file is not None else {}
        mode = str(params.get("sslmode") or os.environ.get("PGSSLMODE") or "")
        if mode and mode != "verify-full":
            raise PermanentError(
                f"the connection string ({self._source()}) has sslmode={mode}, which does not verify the server: "
                "use sslmode=verify-full (the default when none is given), or set insecure: true"
            )
        options = {"sslmode": "verify-full"}
        if self.ca_file is not None:
            options["sslrootcert"] = self._ca_path()
        elif not (params.get("sslrootcert") or os.environ.get("PGSSLROOTCERT")):
            options["sslrootcert"] = "system"
        return options

    def _ca_path(self) -> str:
        assert self.ca_file is not None
        resolved, problem = secret_policy().file_problem(self.ca_file)
        if problem:
            raise PermanentError(f"ca_file refused: {problem}")
        return str(resolved)

    def _source(self) -> str:
        return f"${self.dsn_env}" if self.dsn_env else f"dsn_file {self.dsn_file}"


def _tcp_hosts(params: Mapping[str, Any]) -> list[str]:
    """The network hosts (names or addresses) libpq would connect to for the DSN (or the environment)."""
    found = [h for h in str(params.get("host") or os.environ.get("PGHOST") or "").split(",") if h]
    found = [h for h in found if not h.startswith(("/", "@"))]
    found += [a for a in str(params.get("hostaddr") or os.environ.get("PGHOSTADDR") or "").split(",") if a]
    return found


def _over_tcp(params: Mapping[str, Any]) -> bool:
    """Whether libpq would connect over TCP to any of the DSN's hosts (or the environment's)."""
    if params.get("hostaddr") or (not params.get("host") and os.environ.get("PGHOSTADDR")):
        return True
    hosts = str(params.get("host") or os.environ.get("PGHOST") or "")
    return any(host and not host.startswith(("/", "@")) for host in hosts.split(","))


def verified_tls_or_socket(dsn: str) -> bool:
    """Whether ``dsn`` is safe without ``insecure: true``: a Unix socket, or ``sslmode=verify-full``."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except (psycopg.ProgrammingError, UnicodeDecodeError):
        return False
    return not _over_tcp(params) or (params.get("sslmode") or os.environ.get("PGSSLMODE")) == "verify-full"

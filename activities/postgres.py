"""The PostgreSQL connector: roles are NOLOGIN roles; a grant makes the account a member.

Revoking also ends the account's live sessions: a session that ran ``SET ROLE`` keeps the
role's rights after ``REVOKE`` until it ends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql
from pydantic import BaseModel, ConfigDict, model_validator

from activities.connectors import PermanentError, RetryableError, Target


class PostgresConfig(BaseModel):
    """An integration's settings. The DSN is a reference (an env var or a file), never the secret."""

    model_config = ConfigDict(extra="forbid")

    dsn_env: str | None = None
    """Name of the environment variable holding the connection string."""
    dsn_file: Path | None = None
    """A file holding the connection string (e.g. a mounted secret)."""
    create_accounts: bool = False
    """Create a LOGIN role for a user who has no account yet, on first grant."""

    @model_validator(mode="after")
    def _one_source(self) -> PostgresConfig:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env or dsn_file")
        return self

    def dsn(self) -> str:
        if self.dsn_env is not None:
            value = os.environ.get(self.dsn_env)
            if not value:
                raise PermanentError(f"environment variable {self.dsn_env} (the connection string) is not set")
            return value
        assert self.dsn_file is not None
        try:
            return self.dsn_file.read_text().strip()
        except OSError as error:
            raise PermanentError(f"cannot read the connection string from {self.dsn_file}: {error}") from error


_PERMANENT = (errors.InvalidPassword, errors.InvalidAuthorizationSpecification, errors.InsufficientPrivilege)


@contextmanager
def _classified() -> Iterator[None]:
    """Turn driver errors into retryable (network, locks) or permanent (credentials, rights)."""
    try:
        yield
    except _PERMANENT as error:
        raise PermanentError(f"PostgreSQL refused: {error}".strip()) from error
    except (errors.LockNotAvailable, errors.DeadlockDetected, errors.QueryCanceled) as error:
        raise RetryableError(f"PostgreSQL was busy: {error}".strip()) from error
    except psycopg.OperationalError as error:
        message = str(error)
        if "password authentication failed" in message or ("role" in message and "does not exist" in message):
            raise PermanentError(f"PostgreSQL refused the connection: {message}".strip()) from error
        raise RetryableError(f"cannot reach PostgreSQL: {message}".strip()) from error


class PostgresConnector:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = PostgresConfig.model_validate(dict(config))

    @classmethod
    def for_target(cls, target: Target) -> PostgresConnector:
        return cls(target.config)

    def account_for(self, email: str) -> str:
        """The email's local part, lowercased, with anything but ``[a-z0-9_]`` as ``_``."""
        return re.sub(r"[^a-z0-9_]", "_", email.split("@", 1)[0].lower())

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        with _classified(), psycopg.connect(self.config.dsn(), connect_timeout=10, autocommit=True) as connection:
            connection.execute("SET lock_timeout = '5s'")
            yield connection

    def test_connection(self) -> str:
        """The server's version, or a ConnectorError saying what is wrong."""
        with self._connect() as connection:
            row = connection.execute("SHOW server_version").fetchone()
            return f"PostgreSQL {row[0] if row else '?'}"

    def _role_exists(self, connection: psycopg.Connection[Any], name: str) -> bool:
        return connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        with self._connect() as connection:
            if not self._role_exists(connection, target.role):
                raise PermanentError(f"role {target.role} does not exist in PostgreSQL ({target.path})")
            if not self._role_exists(connection, account):
                if not self.config.create_accounts:
                    raise PermanentError(f"account {account} does not exist in PostgreSQL and create_accounts is off")
                with _classified():
                    connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(account)))
            with _classified():
                connection.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(target.role), sql.Identifier(account))
                )

    def revoke(self, account: str, target: Target) -> None:
        with self._connect() as connection:
            if self._role_exists(connection, target.role) and self._role_exists(connection, account):
                with _classified():
                    connection.execute(
                        sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(target.role), sql.Identifier(account))
                    )
            # End live sessions: SET ROLE keeps the role's rights until the session ends.
            with _classified():
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename = %s AND pid <> pg_backend_pid()",
                    (account,),
                )

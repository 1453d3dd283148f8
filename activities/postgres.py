"""The PostgreSQL connector: roles are NOLOGIN roles; a grant makes the account a member.

Revoking also ends the account's live sessions: a session that ran ``SET ROLE`` keeps the
role's rights after ``REVOKE`` until it ends.

In ephemeral-credentials mode (``ephemeral: true``, as Vault's database secrets do it) each
grant is a login role of its own, with a random password and ``VALID UNTIL`` the grant's end,
so PostgreSQL refuses new logins after the expiry even if Lapse is down; the revoke drops it.
The password reaches the server only as a SCRAM verifier, never in clear in a statement.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql
from pydantic import model_validator

from activities.connectors import (
    ConnectorConfig,
    Credentials,
    DiscoveredRole,
    Discovery,
    EnvName,
    HeldRole,
    PermanentError,
    RetryableError,
    Target,
    secret,
)


class PostgresConfig(ConnectorConfig):
    """An integration's settings. The DSN is a reference (an env var or a file), never the secret."""

    dsn_env: EnvName | None = None
    """Name of the environment variable holding the connection string."""
    dsn_file: Path | None = None
    """A file holding the connection string (e.g. a mounted secret)."""
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
        return secret(env=self.dsn_env, file=self.dsn_file, what="the connection string")


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


EPHEMERAL_MARK = "lapse: ephemeral login"
"""The comment on every login role ephemeral mode makes: only such roles are ever dropped."""


class PostgresConnector:
    discovers = True
    accounts_by_rule = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = PostgresConfig.model_validate(dict(config))
        self.per_grant_accounts = self.config.ephemeral

    def account_for(self, email: str) -> str:
        """The account rule's result (the email's local part by default), with anything but ``[a-z0-9_]`` as ``_``."""
        return re.sub(r"[^a-z0-9_]", "_", self.config.account.apply(email).lower())

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

    def _resource(self, connection: psycopg.Connection[Any]) -> str:
        if self.config.resource:
            return self.config.resource
        row = connection.execute("SELECT current_database()").fetchone()
        return str(row[0]) if row else "postgres"

    def discover(self) -> Discovery:
        """NOLOGIN roles (with the prefix), each described by the tables it may use in this database."""
        with self._connect() as connection, _classified():
            resource = self._resource(connection)
            rows = connection.execute(
                "SELECT r.rolname, coalesce(d.description, ''), "
                "  (SELECT string_agg(DISTINCT g.privilege_type || ' ON ' || g.table_schema || '.' || g.table_name, "
                "     ', ' ORDER BY g.privilege_type || ' ON ' || g.table_schema || '.' || g.table_name) "
                "   FROM information_schema.role_table_grants g WHERE g.grantee = r.rolname) "
                "FROM pg_roles r LEFT JOIN pg_shdescription d ON d.objoid = r.oid "
                "WHERE NOT r.rolcanlogin AND r.rolname NOT LIKE 'pg\\_%%' AND r.rolname LIKE %s "
                "ORDER BY r.rolname",
                (_like_prefix(self.config.role_prefix),),
            ).fetchall()
        roles = [
            DiscoveredRole(resource=resource, name=name, description=comment or (f"may {grants}" if grants else ""))
            for name, comment, grants in rows
        ]
        return Discovery(resources={resource: "PostgreSQL database"}, roles=roles)

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        """Direct members of the roles; role names are cluster-wide, so one query covers them all."""
        by_name = {role.name: role for role in roles}
        if not by_name:
            return []
        with self._connect() as connection, _classified():
            rows = connection.execute(
                "SELECT g.rolname, m.rolname FROM pg_auth_members a "
                "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
                "WHERE g.rolname = ANY(%s)",
                (list(by_name),),
            ).fetchall()
        return [HeldRole(account=member, resource=by_name[role].resource, role=role) for role, member in rows]

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        with self._connect() as connection:
            if not self._role_exists(connection, target.role):
                raise PermanentError(f"role {target.role} does not exist in PostgreSQL ({target.path})")
            if self.config.ephemeral:
                return self._grant_login(connection, account, target, expires_at)
            if not self._role_exists(connection, account):
                if not self.config.create_accounts:
                    raise PermanentError(f"account {account} does not exist in PostgreSQL and create_accounts is off")
                with _classified():
                    connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(account)))
            with _classified():
                connection.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(target.role), sql.Identifier(account))
                )
        return None

    def _grant_login(
        self, connection: psycopg.Connection[Any], account: str, target: Target, expires_at: datetime | None
    ) -> Credentials:
        """Create the grant's login role, or (an activity retry) give it a new password and end."""
        password = secrets.token_urlsafe(24)
        # Hashed here like psql's \password: the clear password never appears in a statement or a server log.
        verifier = connection.pgconn.encrypt_password(password.encode(), account.encode()).decode()
        options = sql.SQL("LOGIN PASSWORD {} VALID UNTIL {}").format(sql.Literal(verifier), _until(expires_at))
        exists = self._role_exists(connection, account)
        if exists and not self._is_ephemeral_login(connection, account):
            raise PermanentError(f"role {account} exists in PostgreSQL but is not a login Lapse made: not touching it")
        with _classified(), connection.transaction():  # the role and its mark together, or neither
            if exists:
                connection.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(account), options))
                connection.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(target.role), sql.Identifier(account))
                )
            else:
                connection.execute(
                    sql.SQL("CREATE ROLE {} {} IN ROLE {}").format(
                        sql.Identifier(account), options, sql.Identifier(target.role)
                    )
                )
            connection.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(account), sql.Literal(f"{EPHEMERAL_MARK} for {target.path}")
                )
            )
        return Credentials(
            username=account, password=password, expires_at=expires_at, dsn_hint=self._dsn_hint(connection, account)
        )

    def _dsn_hint(self, connection: psycopg.Connection[Any], account: str) -> str:
        info = connection.info
        host = info.host if not info.host.startswith("/") else "localhost"
        return f"postgresql://{account}@{host}:{info.port}/{info.dbname}"

    def _is_ephemeral_login(self, connection: psycopg.Connection[Any], account: str) -> bool:
        row = connection.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (account,)
        ).fetchone()
        return row is not None and str(row[0] or "").startswith(EPHEMERAL_MARK)

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        """Move an ephemeral login's ``VALID UNTIL`` to the grant's new end; its password stays."""
        if not self.config.ephemeral:
            return
        with self._connect() as connection:
            if not self._is_ephemeral_login(connection, account):
                raise PermanentError(f"login {account} is gone from PostgreSQL: it cannot be extended")
            with _classified():
                connection.execute(
                    sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(sql.Identifier(account), _until(expires_at))
                )

    def revoke(self, account: str, target: Target) -> None:
        with self._connect() as connection:
            # Only a login this mode made is dropped: drift remediation revokes other people's accounts too.
            if self.config.ephemeral and self._is_ephemeral_login(connection, account):
                self._drop_login(connection, account)
                return
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

    def _drop_login(self, connection: psycopg.Connection[Any], account: str) -> None:
        """No new logins, end the live sessions, then drop what the login owns here and the login."""
        with _classified():
            connection.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(account)))
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                (account,),
            )
            connection.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(account)))
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(account)))


def _until(expires_at: datetime | None) -> sql.Composable:
    """A ``VALID UNTIL`` value: the grant's end in UTC, or ``infinity`` for standing access."""
    return sql.Literal(expires_at.isoformat() if expires_at is not None else "infinity")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

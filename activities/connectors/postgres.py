"""The PostgreSQL connector: roles are NOLOGIN roles; a grant makes the account a member.

Revoking also ends the account's live sessions: a session that ran ``SET ROLE`` keeps the
role's rights after ``REVOKE`` until it ends. Listing grants says which accounts have a session
open now (``pg_stat_activity``): discovery records that as the access's last use.

In ephemeral-credentials mode (``ephemeral: true``, as Vault's database secrets do it) each
grant is a login role of its own, with a random password and ``VALID UNTIL`` the grant's end,
so PostgreSQL refuses new logins after the expiry even if Lapse is down; the revoke drops it.
The password reaches the server only as a SCRAM verifier, never in clear in a statement.

Its settings, and the TLS rule for its connection string, are ``postgres_config.PostgresConfig``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import conninfo, errors, sql

from access.connectors import (
    Credentials,
    DiscoveredRole,
    Discovery,
    HeldRole,
    PermanentError,
    RetryableError,
    Target,
)
from activities.connectors.base import ConnectorBase
from activities.connectors.postgres_config import PostgresConfig
from activities.connectors.secrets import remember_secret

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
        if any(sign in message for sign in _TLS_REFUSALS):
            raise PermanentError(f"PostgreSQL refused TLS: {message}".strip()) from error
        if "password authentication failed" in message or ("role" in message and "does not exist" in message):
            raise PermanentError(f"PostgreSQL refused the connection: {message}".strip()) from error
        raise RetryableError(f"cannot reach PostgreSQL: {message}".strip()) from error


_TLS_REFUSALS = ("server does not support SSL", "certificate", "root certificate file")
"""How libpq says verified TLS cannot be had: a configuration problem, not the network."""

EPHEMERAL_MARK = "lapse: ephemeral login"
"""The comment on every login role ephemeral mode makes: only such roles are ever dropped."""


class PostgresConnector(ConnectorBase):
    discovers = True
    accounts_by_rule = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = PostgresConfig.model_validate(dict(config))
        self.per_grant_accounts = self.config.ephemeral

    def account_for(self, email: str) -> str:
        """The account rule's result as it is (the email's local part, lowercased, by default).

        Nothing is replaced: ``a.lan@`` and ``a_lan@`` are the logins ``a.lan`` and ``a_lan`` (quoted
        identifiers), so two emails the rule tells apart never share a login. Names longer than
        PostgreSQL's 63 bytes, which it would truncate into each other, are refused at grant."""
        return self.config.account.apply(email)

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        dsn = self.config.dsn()
        target = conninfo.make_conninfo(dsn, **self.config.connection_options(dsn))
        remember_secret(target)  # the DSN as libpq gets it: its password in every spelling
        with _classified(), psycopg.connect(target, connect_timeout=10, autocommit=True) as connection:
            connection.execute("SET lock_timeout = '5s'")
            yield connection

    def test_connection(self) -> str:
        """The server's version and how the connection is protected, or a ConnectorError saying what is wrong."""
        with self._connect() as connection:
            row = connection.execute("SHOW server_version").fetchone()
            info = connection.info
            if info.host.startswith("/"):
                transport = "Unix socket"
            elif connection.pgconn.ssl_in_use:
                transport = "TLS" + (", certificate verified" if not self.config.insecure else "")
            else:
                transport = "plaintext"
            return f"PostgreSQL {row[0] if row else '?'} ({transport}){self.config.insecure_note()}"

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
            privileged = _privileged_roles(connection)
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
        roles: list[DiscoveredRole] = []
        warnings: list[str] = []
        allowed = set(self.config.allow_privileged)
        for name, comment, grants in rows:
            description = comment or (f"may {grants}" if grants else "")
            why = privileged.get(name)
            if why and name not in allowed:
                warnings.append(f"left out the privileged role {name} ({why}); allow_privileged names it to offer it")
                continue
            if why:
                warnings.append(f"offering the privileged role {name} ({why}): it is in allow_privileged")
                description = f"WARNING: privileged ({why}), allowed by allow_privileged. {description}".strip()
            roles.append(DiscoveredRole(resource=resource, name=name, description=description))
        return Discovery(resources={resource: "PostgreSQL database"}, roles=roles, warnings=warnings)

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        """Direct members of the roles; role names are cluster-wide, so one query covers them all. A member with
        a live session now is in use now (``last_used``): a session of a login uses every role it is a member of."""
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
            in_use = _in_session(connection, {str(member) for _, member in rows})
        now = datetime.now(UTC)
        return [
            HeldRole(
                account=member, resource=by_name[role].resource, role=role, last_used=now if member in in_use else None
            )
            for role, member in rows
        ]

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        if len(account.encode()) > MAX_NAME:
            raise PermanentError(
                f"account {account!r} is longer than PostgreSQL's {MAX_NAME} bytes: it would be truncated and could "
                "be another user's login; give the integration an account rule that makes shorter names"
            )
        with self._connect() as connection:
            if not self._role_exists(connection, target.role):
                raise PermanentError(f"role {target.role} does not exist in PostgreSQL ({target.path})")
            with _classified():
                why = _privilege_of(connection, target.role)
            if why and target.role not in self.config.allow_privileged:
                raise PermanentError(
                    f"role {target.role} is privileged ({why}) and not in the integration's allow_privileged: "
                    "not granting it"
                )
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
        remember_secret(password)  # neither may appear in an error this call lets out
        remember_secret(verifier)
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


MAX_NAME = 63
"""PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes)."""

PRIVILEGED_ATTRIBUTES = (
    ("rolsuper", "SUPERUSER"),
    ("rolcreaterole", "CREATEROLE"),
    ("rolcreatedb", "CREATEDB"),
    ("rolbypassrls", "BYPASSRLS"),
    ("rolreplication", "REPLICATION"),
)
PRIVILEGED_BUILT_IN = frozenset({"pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"})
"""Predefined roles that reach the server's operating system (run programs, read or write its files)."""


def _own_privileges(name: str, flags: Iterable[Any]) -> list[str]:
    reasons = [label for (_, label), on in zip(PRIVILEGED_ATTRIBUTES, flags, strict=True) if on]
    if name in PRIVILEGED_BUILT_IN:
        reasons.append("reaches the server's files or programs")
    return reasons


def _privilege_of(connection: psycopg.Connection[Any], role: str) -> str | None:
    """Why ``role`` is privileged (as ``_privileged_roles`` says), reading only the roles above it."""
    columns = ", ".join(f"r.{column}" for column, _ in PRIVILEGED_ATTRIBUTES)
    rows = connection.execute(
        "WITH RECURSIVE up(oid) AS (SELECT oid FROM pg_roles WHERE rolname = %s "
        "  UNION SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid) "
        f"SELECT r.rolname, {columns} FROM up JOIN pg_roles r ON r.oid = up.oid",
        (role,),
    ).fetchall()
    reasons: list[str] = []
    for name, *flags in sorted(rows, key=lambda row: row[0] != role):
        own = _own_privileges(str(name), flags)
        if own and name == role:
            reasons += own
        elif own:
            reasons.append(f"member of {name}: {', '.join(own)}")
    return "; ".join(reasons) or None


def _privileged_roles(connection: psycopg.Connection[Any]) -> dict[str, str]:
    """Every privileged role, with why: its own attributes, or the privileged role it is (transitively) a
    member of, since a member can ``SET ROLE`` to it (memberships are followed whatever their options)."""
    columns = ", ".join(column for column, _ in PRIVILEGED_ATTRIBUTES)
    rows = connection.execute(f"SELECT oid, rolname, {columns} FROM pg_roles").fetchall()
    names = {row[0]: str(row[1]) for row in rows}
    own: dict[int, list[str]] = {}
    for row in rows:
        reasons = _own_privileges(str(row[1]), row[2:])
        if reasons:
            own[row[0]] = reasons
    parents: dict[int, set[int]] = {}
    for member, role in connection.execute("SELECT member, roleid FROM pg_auth_members").fetchall():
        parents.setdefault(member, set()).add(role)
    result: dict[str, str] = {}
    for oid, name in names.items():
        reasons = list(own.get(oid, []))
        seen, pending = {oid}, list(parents.get(oid, ()))
        while pending:
            above = pending.pop()
            if above in seen:
                continue
            seen.add(above)
            if above in own:
                reasons.append(f"member of {names.get(above, above)}: {', '.join(own[above])}")
            pending.extend(parents.get(above, ()))
        if reasons:
            result[name] = "; ".join(reasons)
    return result


def _in_session(connection: psycopg.Connection[Any], logins: set[str]) -> set[str]:
    """Which of ``logins`` have a session open now, in any database of the cluster. Lapse's own login is left out
    (this connection, other workers', an app DB in the same cluster): its sessions are Lapse's, not the access's.
    Any role may read who is connected (``pg_stat_activity.usename``); only what they run is hidden."""
    if not logins:
        return set()
    rows = connection.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity "
        "WHERE usename = ANY(%s) AND usename <> current_user AND pid <> pg_backend_pid()",
        (sorted(logins),),
    ).fetchall()
    return {str(name) for (name,) in rows}


def _until(expires_at: datetime | None) -> sql.Composable:
    """A ``VALID UNTIL`` value: the grant's end in UTC, or ``infinity`` for standing access."""
    return sql.Literal(expires_at.isoformat() if expires_at is not None else "infinity")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

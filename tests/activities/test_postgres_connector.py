"""The PostgreSQL connector against a real server: grants that work, revokes that end sessions.

What every connector promises (idempotence, error classes, discovery) is in test_connector_contract.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest

from access.connectors import PermanentError, Target
from activities.connectors.postgres import PostgresConnector
from harness.postgres import PostgresServer


@dataclass
class Setup:
    server: PostgresServer
    role: str
    account: str
    password: str
    connector: PostgresConnector
    target: Target

    def login(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(self.account, password=self.password), autocommit=True)


@pytest.fixture
def setup(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    suffix = uuid.uuid4().hex[:6]
    role, account, password = f"orders_read_{suffix}", f"alan_{suffix}", "s3cret-" + suffix
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE TABLE IF NOT EXISTS orders_{suffix} (id int)")
        admin.execute(f"INSERT INTO orders_{suffix} VALUES (1), (2)")
        admin.execute(f"CREATE ROLE {role} NOLOGIN")
        admin.execute(f"GRANT SELECT ON orders_{suffix} TO {role}")
        admin.execute(f"CREATE ROLE {account} LOGIN PASSWORD '{password}'")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    connector = PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True})
    target = Target(integration="pg", resource="postgres", role=role, config={})
    return Setup(postgres, role, account, password, connector, target)


def _can_read(session: psycopg.Connection, setup: Setup) -> bool:
    suffix = setup.role.rsplit("_", 1)[1]
    try:
        session.execute(f"SET ROLE {setup.role}")
        session.execute(f"SELECT count(*) FROM orders_{suffix}").fetchone()
        session.execute("RESET ROLE")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def test_grant_lets_the_account_set_role_and_read(setup: Setup) -> None:
    with setup.login() as session:
        assert not _can_read(session, setup)
    setup.connector.grant(setup.account, setup.target, None)
    setup.connector.grant(setup.account, setup.target, None)  # idempotent
    with setup.login() as session:
        assert _can_read(session, setup)


def test_revoke_removes_the_role_and_ends_sessions_that_used_it(setup: Setup) -> None:
    setup.connector.grant(setup.account, setup.target, None)
    holder = setup.login()
    suffix = setup.role.rsplit("_", 1)[1]
    holder.execute(f"SET ROLE {setup.role}")
    assert holder.execute(f"SELECT count(*) FROM orders_{suffix}").fetchone() == (2,)

    setup.connector.revoke(setup.account, setup.target)
    setup.connector.revoke(setup.account, setup.target)  # revoking what is gone is success

    with pytest.raises(psycopg.OperationalError):
        holder.execute(f"SELECT count(*) FROM orders_{suffix}")  # the session that had SET ROLE is gone
    with setup.login() as session:
        assert not _can_read(session, setup)


def test_account_is_created_on_first_grant_when_configured(setup: Setup, postgres: PostgresServer) -> None:
    connector = PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN", "create_accounts": True, "insecure": True})
    account = connector.account_for(f"New.Hire-{uuid.uuid4().hex[:4]}@example.com")
    assert account.startswith("new.hire-")  # the account rule's result as it is, lowercased
    connector.grant(account, setup.target, None)
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        members = admin.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s",
            (setup.role,),
        ).fetchall()
    assert (account,) in members


def test_unknown_account_without_create_accounts_is_a_permanent_error(setup: Setup) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        setup.connector.grant("nobody_here", setup.target, None)

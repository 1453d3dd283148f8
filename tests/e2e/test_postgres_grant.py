"""A request for a real PostgreSQL role, through the API and the workflow, to its lapse."""

from __future__ import annotations

import psycopg
import pytest
from sqlmodel import select

from harness.postgres import PostgresServer
from store.db import session_scope
from store.settings import Settings
from store.tables import Role
from tests.conftest import Api, load_into

PASSWORD = "katherine-pw"


@pytest.fixture
def pg_role(postgres: PostgresServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A NOLOGIN role ``reports_read`` in a real cluster, catalogued as ``pg/postgres/reports_read``."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS reports (id int)")
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'reports_read'").fetchone():
            admin.execute("CREATE ROLE reports_read NOLOGIN")
            admin.execute("GRANT SELECT ON reports TO reports_read")
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'katherine'").fetchone():
            admin.execute("CREATE ROLE katherine LOGIN")
        admin.execute(f"ALTER ROLE katherine LOGIN PASSWORD '{PASSWORD}'")  # other tests may have made her
        admin.execute("REVOKE reports_read FROM katherine")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    load_into(
        settings,
        {
            "integrations": [
                {
                    "name": "pg",
                    "kind": "postgres",
                    "config": {"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True},
                    "resources": [{"name": "postgres", "roles": [{"name": "reports_read"}]}],
                }
            ],
            "assignments": [{"workflow": "read-only", "scope": "pg"}],
        },
    )
    return "pg/postgres/reports_read"


def _reads(session: psycopg.Connection) -> bool:
    try:
        session.execute("SET ROLE reports_read")
        session.execute("SELECT count(*) FROM reports").fetchone()
        session.execute("RESET ROLE")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


async def test_postgres_role_is_granted_then_lapses_and_its_sessions_end(
    api: Api, pg_role: str, postgres: PostgresServer
) -> None:
    dsn = postgres.dsn("katherine", password=PASSWORD)
    created = await api.request("katherine@example.com", pg_role, "PT4S", "")
    await api.wait_for(created["id"], "active")

    holder = psycopg.connect(dsn, autocommit=True)
    assert _reads(holder)
    holder.execute("SET ROLE reports_read")  # keeps the rights after REVOKE, unless the session ends

    await api.wait_for(created["id"], "expired", timeout=30)
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT count(*) FROM reports")
    with psycopg.connect(dsn, autocommit=True) as fresh:
        assert not _reads(fresh)


async def test_overlapping_postgres_grants_keep_access_until_the_last_ends(
    api: Api, pg_role: str, postgres: PostgresServer
) -> None:
    dsn = postgres.dsn("katherine", password=PASSWORD)
    first = await api.request("katherine@example.com", pg_role, "PT30M", "")
    second = await api.request("katherine@example.com", pg_role, "PT30M", "")
    await api.wait_for(first["id"], "active")
    await api.wait_for(second["id"], "active")

    await api.ok("katherine@example.com", "POST", f"/api/requests/{first['id']}/revoke", {})
    with psycopg.connect(dsn, autocommit=True) as session:
        assert _reads(session)
    await api.ok("katherine@example.com", "POST", f"/api/requests/{second['id']}/revoke", {})
    with psycopg.connect(dsn, autocommit=True) as session:
        assert not _reads(session)


async def test_role_removed_from_postgres_fails_the_request_clearly(api: Api, pg_role: str, settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        role = session.exec(select(Role).where(Role.path == pg_role)).one()
        role.name = "reports_gone"
    created = await api.request("katherine@example.com", pg_role, "PT5M", "")
    failed = await api.wait_for(created["id"], "failed", timeout=30)
    assert "role reports_gone does not exist in PostgreSQL" in failed["end_reason"]


async def test_wrong_password_fails_the_request_with_the_reason(
    api: Api, pg_role: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn("katherine", password="not-her-password"))
    created = await api.request("katherine@example.com", pg_role, "PT5M", "")
    failed = await api.wait_for(created["id"], "failed", timeout=30)
    assert "password authentication failed" in failed["end_reason"]

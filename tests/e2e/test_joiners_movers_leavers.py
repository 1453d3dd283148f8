"""The whole loop on real systems: LDAP is the directory, a birthright policy grants a real PostgreSQL
role, and each change made in LDAP reaches PostgreSQL after one triggered directory sync.

Joining the group grants the role; leaving the group revokes it; being disabled takes everything,
including an active JIT grant, whose request ends ``revoked`` with the reason.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ldap3  # type: ignore[import-untyped]
import psycopg
import pytest
import pytest_asyncio
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.ldap import LdapServer
from harness.postgres import PostgresServer
from starter.services.syncs import ensure_sync_schedules
from store.settings import Settings
from tests.conftest import Api, clear_sync_schedules

ADMIN = "ada@example.com"
READ = "ledger/prod-db/read"  # read-only: granted at once for a short while


@dataclass
class World:
    ldap: LdapServer
    pg: PostgresServer
    people: str
    groups: str
    group: str
    """The LDAP group the birthright policy follows (a Lapse group once synced)."""
    group_dn: str
    uid: str
    email: str
    role: str
    """The PostgreSQL role the policy grants, as a Lapse role path."""
    pg_role: str

    def member_of_group(self, present: bool) -> None:
        change = ldap3.MODIFY_ADD if present else ldap3.MODIFY_DELETE
        with self.ldap.admin() as connection:
            connection.modify(self.group_dn, {"member": [(change, [f"uid={self.uid},{self.people}"])]})

    def disable(self) -> None:
        with self.ldap.admin() as connection:
            connection.modify(f"uid={self.uid},{self.people}", {"employeeType": [(ldap3.MODIFY_REPLACE, ["disabled"])]})

    def holds_pg_role(self) -> bool:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as admin:
            row = admin.execute(
                "SELECT 1 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
                "JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = %s AND m.rolname = %s",
                (self.pg_role, self.uid),  # the login is the email's local part as it is
            ).fetchone()
        return row is not None


async def _finished(api: Api, sync: str, since: datetime) -> dict[str, Any]:
    """The state of a ``sync`` run that started after ``since``, once it finished without an error."""
    state = await api.sync_run(sync, since, within=60)
    assert state["error"] is None, state
    return state


async def directory_sync_reaches_targets(api: Api) -> dict[str, Any]:
    """Trigger one directory sync; it starts the birthright sync, whose run we wait for too."""
    since = datetime.now(UTC)
    response = await api.call(ADMIN, "POST", "/api/directory/sync")
    assert response.status_code == 202, response.text
    directory = await _finished(api, "directory", since)
    await _finished(api, "birthright", since)
    summary: dict[str, Any] = directory["summary"]
    return summary


@pytest_asyncio.fixture
async def world(
    api: Api,
    env: WorkflowEnvironment,
    settings: Settings,
    postgres: PostgresServer,
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[World]:
    await clear_sync_schedules(env.client)
    await ensure_sync_schedules(env.client, settings)
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    uid, email = f"newbie-{suffix}", f"newbie-{suffix}@example.com"
    ldap_server.add_user("linus", base=people, email="linus@example.com", name="Linus")
    ldap_server.add_user(uid, base=people, email=email, name="Newbie", manager=f"uid=linus,{people}")
    group = f"analysts-{suffix}"
    group_dn = ldap_server.add_group(group, [f"uid=linus,{people}"], base=groups)
    pg_role = f"analytics_{suffix}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {pg_role} NOLOGIN")
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", ldap_server.admin_password)
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    directory, warehouse = f"corp-{suffix}", f"warehouse-{suffix}"
    for body in (
        {
            "name": directory,
            "kind": "ldap",
            "directory": True,
            "config": {
                "url": ldap_server.url,
                "bind_dn": ldap_server.admin_dn,
                "password_env": "LAPSE_TEST_LDAP_PASSWORD",
                "insecure": True,
                "users_base": people,
                "groups_base": groups,
                "disabled_attribute": "employeeType",
                "disabled_value": "disabled",
            },
        },
        {
            "name": warehouse,
            "kind": "postgres",
            "config": {
                "dsn_env": "LAPSE_TEST_PG_DSN",
                "insecure": True,
                "role_prefix": pg_role,
                "resource": "warehouse",
                "create_accounts": True,
            },
        },
    ):
        response = await api.call(ADMIN, "POST", "/api/integrations", body)
        assert response.status_code == 201, response.text
    await api.ok(ADMIN, "POST", f"/api/integrations/{warehouse}/discover")
    role = f"{warehouse}/warehouse/{pg_role}"

    await directory_sync_reaches_targets(api)  # the group exists in Lapse once the directory is read
    since = datetime.now(UTC)
    policy = {"name": f"analysts-{suffix}", "groups": [group], "roles": [role]}
    response = await api.call(ADMIN, "POST", "/api/birthright/policies", policy)
    assert response.status_code == 201, response.text
    await _finished(api, "birthright", since)

    yield World(ldap_server, postgres, people, groups, group, group_dn, uid, email, role, pg_role)
    for name in (directory, warehouse):
        with contextlib.suppress(RPCError):
            await env.client.get_schedule_handle(names.discovery_id(name)).delete()
    await clear_sync_schedules(env.client)


async def test_ldap_group_changes_reach_the_postgres_role_and_a_leaver_loses_everything(
    api: Api, world: World, audit: Any
) -> None:
    assert not world.holds_pg_role()

    world.member_of_group(True)
    moved = await directory_sync_reaches_targets(api)
    assert [m["email"] for m in moved["movers"]] == [world.email]
    assert world.holds_pg_role()
    mine = await api.ok(world.email, "GET", "/api/grants")
    assert [(g["role"], g["path"], g["returns_on_sync"]) for g in mine] == [(world.role, "birthright", True)]

    world.member_of_group(False)
    await directory_sync_reaches_targets(api)
    assert not world.holds_pg_role()

    world.member_of_group(True)
    await directory_sync_reaches_targets(api)
    assert world.holds_pg_role()
    jit = await api.request(world.email, READ, "PT30M", "")
    await api.wait_for(jit["id"], "active")

    world.disable()
    left = await directory_sync_reaches_targets(api)
    assert left["left"] == 1
    ended = await api.wait_for(jit["id"], "revoked")
    assert ended["ended_by"] == "lapse"
    assert f"{world.email} left the organisation" in ended["end_reason"]
    assert not world.holds_pg_role()
    assert "birthright.revoked" in [e.action for e in audit(world.role)]
    assert (await api.call(world.email, "GET", "/api/grants")).status_code == 401  # a leaver cannot sign in

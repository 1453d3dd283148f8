"""Integrations through the API and the real workflows, against a real PostgreSQL cluster:
connection tests, discovery into the catalog and ledger, external grants, drift remediation."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from temporalio.client import ScheduleIntervalSpec
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.postgres import PostgresServer
from tests.conftest import Api, load_into
from tests.support import NO_SCHEDULED_DISCOVERY

ADMIN = "ada@example.com"


@dataclass
class Cluster:
    """One integration's worth of roles in the shared cluster, named apart from other tests'."""

    name: str
    prefix: str
    server: PostgresServer

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True)

    def members(self, role: str) -> set[str]:
        with self.admin() as admin:
            rows = admin.execute(
                "SELECT m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
                "JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = %s",
                (role,),
            ).fetchall()
        return {row[0] for row in rows}


@pytest_asyncio.fixture
async def cluster(
    postgres: PostgresServer, env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    suffix = uuid.uuid4().hex[:6]
    cluster = Cluster(name=f"pg-{suffix}", prefix=f"d{suffix}_", server=postgres)
    with cluster.admin() as admin:
        admin.execute(f"CREATE ROLE {cluster.prefix}read NOLOGIN")
        admin.execute(f"COMMENT ON ROLE {cluster.prefix}read IS 'reads the reports'")
        admin.execute(f"CREATE ROLE {cluster.prefix}write NOLOGIN")
        admin.execute(f"CREATE ROLE {cluster.prefix}gone NOLOGIN")
        for login in ("alan", "katherine", f"svc_{suffix}"):
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                admin.execute(f"CREATE ROLE {login} LOGIN")
        admin.execute(f"GRANT {cluster.prefix}read TO alan")  # by hand: Lapse did not make it
        admin.execute(f"GRANT {cluster.prefix}read TO svc_{suffix}")  # an account no user matches
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    yield cluster
    with contextlib.suppress(RPCError):  # a test that never created the integration has no schedule
        await env.client.get_schedule_handle(names.discovery_id(cluster.name)).delete()


async def _create(api: Api, cluster: Cluster, **overrides: object) -> Any:
    body = {
        "name": cluster.name,
        "kind": "postgres",
        "config": {
            "dsn_env": "LAPSE_TEST_PG_DSN",
            "role_prefix": cluster.prefix,
            "resource": "reports",
            "insecure": True,
        },
        "discovery_every": NO_SCHEDULED_DISCOVERY,
        **overrides,
    }
    response = await api.call(ADMIN, "POST", "/api/integrations", body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_created_integration_has_a_discovery_schedule_and_passes_its_connection_test(
    api: Api, cluster: Cluster, env: WorkflowEnvironment
) -> None:
    created = await _create(api, cluster, discovery_every="PT10M")
    assert created["discovery_every"] == "PT10M"

    schedule = await env.client.get_schedule_handle(names.discovery_id(cluster.name)).describe()
    assert schedule.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=10))]

    tested = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/test")
    assert tested["ok"] is True and tested["detail"].startswith("PostgreSQL 1")


async def test_connection_test_names_what_is_wrong(
    api: Api, cluster: Cluster, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _create(api, cluster)
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn("katherine", password="wrong"))
    tested = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/test")
    assert tested["ok"] is False and "password authentication failed" in tested["detail"]
    assert tested["retryable"] is False

    monkeypatch.setenv("LAPSE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:1/postgres")
    tested = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/test")
    assert tested["ok"] is False and "cannot reach PostgreSQL" in tested["detail"]
    assert tested["retryable"] is True

    # Discovery fails with the same reason, and the integration shows it.
    response = await api.call(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert response.status_code == 502 and "cannot reach PostgreSQL" in response.json()["detail"]
    shown = await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}")
    assert "cannot reach PostgreSQL" in shown["discovery_error"]


async def test_bad_integration_input_is_a_422_naming_the_field(api: Api, cluster: Cluster) -> None:
    base = {"name": cluster.name, "kind": "postgres", "config": {"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True}}
    inline_secret = {**base, "config": {"dsn_env": "LAPSE_TEST_PG_DSN", "password": "hunter2"}}
    secret_as_reference = {**base, "config": {"dsn_env": "postgresql://u:hunter2@db/x"}}
    for body, field in [
        (inline_secret, "config"),
        (secret_as_reference, "config"),
        ({**base, "kind": "oracle"}, "kind"),
        ({**base, "name": "Bad Name"}, "name"),
        ({**base, "discovery_every": "PT5S"}, "discovery_every"),
        ({**base, "config": {}}, "config"),
    ]:
        response = await api.call(ADMIN, "POST", "/api/integrations", body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field and "hunter2" not in response.text
    response = await api.call("alan@example.com", "POST", "/api/integrations", base)
    assert response.status_code == 403
    assert (await api.call(ADMIN, "GET", f"/api/integrations/{cluster.name}")).status_code == 404


async def test_discovery_fills_the_catalog_and_records_grants_made_outside_lapse(
    api: Api, cluster: Cluster, audit
) -> None:
    await _create(api, cluster)
    result = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert result["roles"] == 3 and result["roles_added"] == 3
    assert result["external_found"] == 2 and result["unlinked_accounts"] == 1

    roles = {r["name"]: r for r in await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}/roles")}
    read = roles[f"{cluster.prefix}read"]
    assert read["path"] == f"{cluster.name}/reports/{cluster.prefix}read"
    assert read["description"] == "reads the reports" and read["holders"] == 2

    external = await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}/grants?path=external")
    assert {(g["account"], g["user"]) for g in external} == {
        ("alan", "alan@example.com"),
        (f"svc_{cluster.prefix[1:-1]}", None),
    }
    unlinked = await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}/grants", unlinked="true")
    assert [g["account"] for g in unlinked] == [f"svc_{cluster.prefix[1:-1]}"]
    # Alan sees the grant he holds outside Lapse among his own.
    mine = await api.ok("alan@example.com", "GET", "/api/grants")
    assert any(g["role"] == read["path"] and g["path"] == "external" for g in mine)

    # Run again: nothing new; then the hand-made grant is taken away in the target.
    again = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert again["external_found"] == 0 and again["roles_added"] == 0
    with cluster.admin() as admin:
        admin.execute(f"REVOKE {cluster.prefix}read FROM alan")
        admin.execute(f"DROP ROLE {cluster.prefix}gone")
    third = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert third["external_gone"] == 1 and third["roles_missing"] == 1
    mine = await api.ok("alan@example.com", "GET", "/api/grants")
    assert not any(g["role"] == read["path"] for g in mine)

    # A role the target no longer has is not requestable, with a reason.
    roles = {r["name"]: r for r in await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}/roles")}
    assert roles[f"{cluster.prefix}gone"]["missing"] is True and not roles[f"{cluster.prefix}read"]["missing"]
    body = {"role": roles[f"{cluster.prefix}gone"]["path"], "duration": "PT1H", "justification": "x"}
    response = await api.call("alan@example.com", "POST", "/api/requests", body)
    assert response.status_code == 409 and "not found in its target" in response.json()["detail"]
    assert [e.action for e in audit(f"integration:{cluster.name}")].count("discovery.completed") == 3


async def test_hand_made_grant_of_an_enforced_jit_only_role_is_revoked_and_audited(
    api: Api, cluster: Cluster, audit
) -> None:
    await _create(api, cluster, enforce_jit_only=True)
    await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    role = f"{cluster.prefix}read"
    path = f"{cluster.name}/reports/{role}"
    updated = await api.ok(ADMIN, "PATCH", f"/api/integrations/{cluster.name}/roles/reports/{role}", {"jit_only": True})
    assert updated["jit_only"] is True
    with cluster.admin() as admin:
        admin.execute(f"GRANT {cluster.prefix}read TO katherine")

    result = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    # The two grants recorded as external before the role was JIT-only stay as they were;
    # the new one is drift.
    assert [d["account"] for d in result["drift"]] == ["katherine"] and result["remediated"] == 1
    assert "katherine" not in cluster.members(role)
    assert "alan" in cluster.members(role)
    actions = [(e.action, e.details.get("account")) for e in audit(path)]
    assert ("drift.detected", "katherine") in actions and ("drift.revoked", "katherine") in actions


async def test_jit_only_role_without_enforcement_is_audited_and_kept(api: Api, cluster: Cluster, audit) -> None:
    await _create(api, cluster)
    role = f"{cluster.prefix}write"
    await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    await api.ok(ADMIN, "PATCH", f"/api/integrations/{cluster.name}/roles/reports/{role}", {"jit_only": True})
    with cluster.admin() as admin:
        admin.execute(f"GRANT {role} TO katherine")
    result = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert result["drift"] == [] and result["external_found"] == 1
    assert "katherine" in cluster.members(role)
    assert [e.action for e in audit(f"{cluster.name}/reports/{role}")] == ["role.updated", "drift.detected"]


async def test_a_lapse_grant_is_not_mistaken_for_drift(api: Api, cluster: Cluster, settings) -> None:
    """A JIT grant on a JIT-only enforced role survives discovery; its expiry still revokes it."""

    await _create(api, cluster, enforce_jit_only=True)
    role = f"{cluster.prefix}write"
    path = f"{cluster.name}/reports/{role}"
    await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    await api.ok(ADMIN, "PATCH", f"/api/integrations/{cluster.name}/roles/reports/{role}", {"jit_only": True})
    load_into(settings, {"assignments": [{"workflow": "read-only", "scope": cluster.name}]})

    created = await api.request("katherine@example.com", path, "PT6S", "")
    await api.wait_for(created["id"], "active")
    assert "katherine" in cluster.members(role)
    result = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert result["drift"] == [] and result["external_found"] == 0 and result["lapse_grants_missing"] == 0
    assert "katherine" in cluster.members(role)
    await api.wait_for(created["id"], "expired", timeout=30)
    assert "katherine" not in cluster.members(role)


async def test_an_admin_revokes_an_external_grant_in_the_target(api: Api, cluster: Cluster, audit) -> None:
    await _create(api, cluster)
    await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    external = await api.ok(ADMIN, "GET", f"/api/integrations/{cluster.name}/grants?path=external")
    (alans,) = [g for g in external if g["account"] == "alan"]
    everyone = await api.ok(ADMIN, "GET", "/api/grants", all="true")
    (row,) = [g for g in everyone if g["role"] == alans["role"] and g["account"] == "alan"]
    assert "alan" in cluster.members(f"{cluster.prefix}read")

    revoked = await api.ok(ADMIN, "POST", f"/api/grants/{row['id']}/revoke", {"comment": "not approved"})
    assert revoked["grant"]["path"] == "external" and revoked["returns_on_sync"] is False
    assert "alan" not in cluster.members(f"{cluster.prefix}read")
    again = await api.ok(ADMIN, "POST", f"/api/integrations/{cluster.name}/discover")
    assert again["external_found"] == 0  # gone from the target: nothing to record again

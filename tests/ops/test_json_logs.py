"""``lapse api`` and ``lapse worker`` as separate processes with JSON logs, through a real request's lifecycle on a
real PostgreSQL: every line they write is a JSON object, the request's lines carry its request id and caller, the
worker's carry the run's workflow id, and the integration's DSN password is in none of them. Their probes answer
on the way."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.ports import free_port
from harness.postgres import PostgresServer
from store.settings import Settings
from tests.conftest import TEST_CODEC_KEY, clear_sync_schedules, load_into
from tests.ops.processes import LAPSE, answering, process_env, started
from tests.support import eventually

ALAN = "alan@example.com"
METRICS_TOKEN = f"scrape-{uuid.uuid4().hex}"


@pytest.fixture
def integration(postgres: PostgresServer, settings: Settings) -> dict[str, str]:
    """A PostgreSQL integration reached as a user with a password (``dsn_env``), with one role to request."""
    suffix = uuid.uuid4().hex[:8]
    user, password, role = f"lapse_ops_{suffix}", f"pw-{uuid.uuid4().hex}", f"ops_reports_{suffix}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
        admin.execute(f"CREATE ROLE {role} NOLOGIN")
    name = f"ops-pg-{suffix}"
    load_into(
        settings,
        {
            "integrations": [
                {
                    "name": name,
                    "kind": "postgres",
                    "config": {"dsn_env": "LAPSE_TEST_OPS_PG_DSN", "insecure": True, "create_accounts": True},
                    "resources": [{"name": "postgres", "roles": [{"name": role, "owners": ["frances@example.com"]}]}],
                }
            ],
            "assignments": [{"workflow": "read-only", "scope": f"{name}/postgres/{role}"}],
        },
    )
    dsn = postgres.dsn(user, password=password)
    return {"name": name, "role": f"{name}/postgres/{role}", "password": password, "dsn": dsn}


@pytest.fixture
async def cleanup(env: WorkflowEnvironment, integration: dict[str, str]) -> AsyncIterator[None]:
    yield
    await clear_sync_schedules(env.client)  # the API made them at start, on this test's queue
    with contextlib.suppress(RPCError):
        await env.client.get_schedule_handle(names.discovery_id(integration["name"])).delete()


async def test_a_lifecycle_logs_json_lines_with_its_ids_and_no_secret(
    settings: Settings, integration: dict[str, str], cleanup: None, tmp_path: Path
) -> None:
    api_port, ops_port = free_port(), free_port()
    environment = process_env(
        settings,
        LAPSE_API_PORT=str(api_port),
        LAPSE_OPS_PORT=str(ops_port),
        LAPSE_TEST_OPS_PG_DSN=integration["dsn"],
        LAPSE_METRICS_TOKEN=METRICS_TOKEN,  # behind the proxy (127.0.0.1 is trusted), this machine needs it too
    )
    api_url, ops_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
    submit_id, revoke_id = f"ops-{uuid.uuid4().hex[:12]}", f"ops-{uuid.uuid4().hex[:12]}"
    with (
        started("worker", [LAPSE, "worker"], environment, tmp_path) as worker,
        started("api", [LAPSE, "api"], environment, tmp_path) as api,
    ):
        await answering(f"{ops_url}/readyz", worker)
        ready = await answering(f"{api_url}/readyz", api)
        assert ready.json() == {"status": "ready", "checks": {"temporal": "ok", "database": "ok", "migrations": "ok"}}
        async with httpx.AsyncClient(timeout=10) as scraper:
            for url in (f"{api_url}/metrics", f"{ops_url}/metrics"):
                assert (await scraper.get(url)).status_code == 401
                scraped = await scraper.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert scraped.status_code == 200, scraped.text
                assert scraped.headers["content-type"].startswith("text/plain")

        async with httpx.AsyncClient(base_url=api_url, timeout=60, headers={"X-Forwarded-Email": ALAN}) as http:
            submitted = await http.post(
                "/api/requests",
                json={"role": integration["role"], "duration": "PT30M"},
                headers={"X-Request-Id": submit_id},
            )
            assert submitted.status_code < 400, submitted.text
            assert submitted.headers["x-request-id"] == submit_id
            request_id = submitted.json()["id"]

            async def state() -> str:
                return str((await http.get(f"/api/requests/{request_id}")).json()["state"])

            await eventually(state, until=lambda s: s == "active", what="the grant to be made")
            revoke = f"/api/requests/{request_id}/revoke"
            revoked = await http.post(revoke, json={}, headers={"X-Request-Id": revoke_id})
            assert revoked.status_code < 400, revoked.text
            await eventually(state, until=lambda s: s == "revoked", what="the revoke")
        assert api.stop() == 0
        assert worker.stop() == 0

    lines: dict[str, list[dict[str, Any]]] = {}
    for running in (api, worker):
        text = running.log.read_text()
        assert integration["password"] not in text
        assert TEST_CODEC_KEY.partition(":")[2] not in text and METRICS_TOKEN not in text
        lines[running.name] = [json.loads(line) for line in running.lines()]  # each one a JSON object
        assert all({"ts", "level", "logger", "process", "msg"} <= set(line) for line in lines[running.name])
        assert {line["process"] for line in lines[running.name]} == {running.name}

    of_submit = [line for line in lines["api"] if line.get("request_id") == submit_id]
    assert any(line["msg"] == "POST /api/requests 201" and line["actor"] == ALAN for line in of_submit), of_submit
    assert any(line.get("request_id") == revoke_id and line.get("actor") == ALAN for line in lines["api"])
    of_run = [line for line in lines["worker"] if line.get("workflow_id") == names.request_workflow_id(request_id)]
    said = {(line["msg"].split(" ")[0], line.get("integration"), line.get("activity_type")) for line in of_run}
    assert ("granted", integration["name"], names.PROVISION_GRANT) in said, of_run
    assert ("revoked", integration["name"], names.REVOKE_GRANT) in said, of_run
    assert any(line["msg"] == "worker stopped" for line in lines["worker"])

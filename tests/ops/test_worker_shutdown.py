"""A worker process on SIGTERM: it stops polling (its ``/readyz`` says so), lets the activity under way finish,
and exits 0; the run sees that activity complete on its first attempt, and another worker carries it on."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from access import names
from activities.connectors import BUILT_IN
from harness.ports import free_port
from starter.api.app import create_app
from store.settings import Settings
from tests.conftest import Api, FakeTarget
from tests.ops.processes import answering, process_env, started
from tests.support import eventually
from worker import build_worker


async def test_sigterm_lets_the_grant_under_way_finish_then_exits_0(
    env: WorkflowEnvironment, settings: Settings, target: FakeTarget, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    ops = f"http://127.0.0.1:{free_port()}"
    environment = process_env(
        settings, LAPSE_OPS_PORT=ops.rpartition(":")[2], LAPSE_SHUTDOWN_GRACE="PT60S", LAPSE_TEST_GATE=str(gate)
    )
    transport = httpx.ASGITransport(app=create_app(settings, client=env.client))
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test", timeout=60) as http:
        api = Api(http)
        with started("worker", [sys.executable, "-m", "tests.ops.slow_worker"], environment, tmp_path) as worker:
            ready = await answering(f"{ops}/readyz", worker)
            assert ready.json()["checks"] == {"temporal": "ok", "database": "ok", "migrations": "ok", "polling": "ok"}
            request = await api.request("alan@example.com", "ledger/prod-db/read", "PT30M")
            await eventually(lambda: (gate / "started").exists(), what="the grant to reach the target")

            worker.process.send_signal(signal.SIGTERM)
            stopping = await answering(f"{ops}/readyz", worker, status=503)
            assert stopping.json()["checks"]["polling"] == "the worker is not polling"
            assert worker.process.poll() is None  # waiting for the grant, which waits at the gate
            (gate / "open").touch()
            assert worker.process.wait(timeout=90) == 0, worker.log.read_text()

        workflow_id = names.request_workflow_id(request["id"])
        events = (await env.client.get_workflow_handle(workflow_id).fetch_history()).events
        scheduled = [
            e.event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == names.PROVISION_GRANT
        ]
        assert len(scheduled) == 1
        started_ = [
            e.activity_task_started_event_attributes
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.activity_task_started_event_attributes.scheduled_event_id == scheduled[0]
        ]
        completed = [
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled[0]
        ]
        assert [s.attempt for s in started_] == [1] and len(completed) == 1
        assert (gate / "granted").read_text().splitlines() == ["alan@example.com"]  # granted once

        # The run goes on with another worker, from where the stopped one left it.
        async with build_worker(env.client, settings, connectors={**BUILT_IN, "ledger": target.connector}):
            await api.wait_for(request["id"], "active")
        assert target.calls == []  # nothing granted again

"""Record workflow histories for the replay test: ``python -m tests.histories.record``.

Run it when the workflow changes in a way worth pinning; keep the old files, since
requests started under old code are still running somewhere. ``python -m tests.histories.record v5 timers``
records only the reminders, escalation and extension-near-the-end scenarios, whose hours pass on the time-skipping
server (``tests/workflows/timer_support.py``); ``... v7 break-glass`` only an emergency request and its review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psycopg
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import limits, names
from activities.connectors import BUILT_IN
from harness.postgres import PostgresServer
from starter.api.app import create_app
from starter.services.syncs import ensure_sync_schedules, trigger_sync
from tests.conftest import TEST_CONVERTER, Api, FakeTarget, clear_sync_schedules, make_settings
from tests.support import eventually
from worker import build_worker

HERE = Path(__file__).parent


async def record(tag: str) -> None:
    async with await WorkflowEnvironment.start_local(
        data_converter=TEST_CONVERTER,  # sealed with the tests' codec key, which the replay test holds
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=[names.REQUESTER, names.RESOURCE, names.ROLE, names.STATE, names.EXPIRES_AT],
    ) as env:
        tmp = tempfile.mkdtemp(prefix="lapse-record-")
        target = FakeTarget()
        settings = make_settings(Path(tmp), env.client.service_client.config.target_host, approval_timeout="PT2S")
        app = create_app(settings, client=env.client)
        connectors = {**BUILT_IN, "ledger": target.connector}
        async with (
            build_worker(env.client, settings, task_queue=settings.task_queue, connectors=connectors),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http,
        ):
            api = Api(http)
            scenarios: dict[str, str] = {}

            one = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT2S")
            await api.ok("linus@example.com", "POST", f"/api/requests/{one['id']}/approve", {"comment": "ok"})
            scenarios["one-step-expired"] = one["id"]

            denied = await api.request("alan@example.com", "ledger/payments-api/deploy")
            await api.ok("linus@example.com", "POST", f"/api/requests/{denied['id']}/deny", {"comment": "no"})
            scenarios["denied"] = denied["id"]

            quorum = await api.request("ken@example.com", "ledger/prod-db/admin", "PT2S")
            for approver in ("margaret@example.com", "radia@example.com", "frances@example.com"):
                await api.ok(approver, "POST", f"/api/requests/{quorum['id']}/approve", {})
            scenarios["two-steps-quorum"] = quorum["id"]

            extended = await api.request("katherine@example.com", "ledger/prod-db/read", "PT10M", "")
            await api.wait_for(extended["id"], "active")
            await api.ok(
                "katherine@example.com", "POST", f"/api/requests/{extended['id']}/extend", {"duration": "PT5M"}
            )
            await api.ok(
                "katherine@example.com",
                "POST",
                f"/api/requests/{extended['id']}/extend",
                {"duration": "PT2H", "justification": "more"},
            )
            await api.ok("ada@example.com", "POST", f"/api/requests/{extended['id']}/approve", {})
            await api.ok("katherine@example.com", "POST", f"/api/requests/{extended['id']}/revoke", {})
            scenarios["extended-then-revoked"] = extended["id"]

            timed_out = await api.request("alan@example.com", "ledger/payments-api/deploy")
            scenarios["timed-out"] = timed_out["id"]

            cancelled = await api.request("alan@example.com", "ledger/payments-api/deploy")
            await api.ok("alan@example.com", "POST", f"/api/requests/{cancelled['id']}/cancel", {})
            scenarios["cancelled"] = cancelled["id"]

            target.revoke_failures = 4
            failing = await api.request("katherine@example.com", "ledger/prod-db/read", "PT1S", "")
            await api.wait_for(failing["id"], "expired", timeout=60)
            scenarios["revoke-failing-then-ok"] = failing["id"]

            # Since v4: a provisioning that failed is taken back; a revoke answers while the target fails.
            target.permanent_grant_error = "no such role (recorded)"
            failed = await api.request("katherine@example.com", "ledger/prod-db/read", "PT10M", "")
            await api.wait_for(failed["id"], "failed", timeout=60)
            target.permanent_grant_error = None
            scenarios["failed-provision-taken-back"] = failed["id"]

            answered = await api.request("katherine@example.com", "ledger/prod-db/read", "PT10M", "")
            await api.wait_for(answered["id"], "active")
            target.revoke_failures = 4
            await api.ok("katherine@example.com", "POST", f"/api/requests/{answered['id']}/revoke", {})
            scenarios["revoked-while-failing"] = answered["id"]

            # A run that continues as new while it holds the grant, with an extension open across the seam.
            limits.HISTORY_EVENTS_BEFORE_CONTINUE = 40
            held = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT10M", "hotfix")
            await api.ok("linus@example.com", "POST", f"/api/requests/{held['id']}/approve", {})
            await api.wait_for(held["id"], "active")
            for _ in range(4):
                extension = {"duration": "PT1M", "justification": "still fixing"}
                await api.ok("alan@example.com", "POST", f"/api/requests/{held['id']}/extend", extension)
                await api.ok("linus@example.com", "POST", f"/api/requests/{held['id']}/approve", {})
            limits.HISTORY_EVENTS_BEFORE_CONTINUE = 2000
            await api.ok("alan@example.com", "POST", f"/api/requests/{held['id']}/revoke", {})
            scenarios["continued-as-new"] = held["id"]

            for name, request_id in scenarios.items():
                await api.wait_for(
                    request_id, "expired", "revoked", "denied", "timed_out", "cancelled", "failed", timeout=60
                )
                await _save(env, names.request_workflow_id(request_id), f"{tag}-{name}")
            first_run = [
                e.run_id async for e in env.client.list_workflows(f'WorkflowId = "access-request-{held["id"]}"')
            ]
            await _save(
                env,
                names.request_workflow_id(held["id"]),
                f"{tag}-continued-as-new-first-run",
                first_run[-1],
                historyEventsBeforeContinue=40,
            )

            # The scheduled syncs and discovery: a policy starts the birthright sync, the directory sync reads
            # the organisation file, and discovery reads a real PostgreSQL.
            await ensure_sync_schedules(env.client, settings)
            body = {"name": "platform-read", "groups": ["platform"], "roles": ["ledger/payments-api/read"]}
            await api.ok("ada@example.com", "POST", "/api/birthright/policies", body)
            await _save(env, await _finished_run(env, "BirthrightSyncWorkflow"), f"{tag}-birthright-sync")
            await api.ok("ada@example.com", "POST", "/api/directory/sync")
            await _save(env, await _finished_run(env, "DirectorySyncWorkflow"), f"{tag}-directory-sync")
            await trigger_sync(env.client, names.EXPIRY_BACKSTOP)
            await _save(env, await _finished_run(env, "ExpiryBackstopWorkflow"), f"{tag}-expiry-backstop")
            await trigger_sync(env.client, names.AUDIT_CHECKPOINT)
            await _save(env, await _finished_run(env, "AuditCheckpointWorkflow"), f"{tag}-audit-checkpoint")

            postgres = PostgresServer().start()
            try:
                with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
                    admin.execute("CREATE ROLE reports_read NOLOGIN")
                    admin.execute("CREATE ROLE alan LOGIN")
                    admin.execute("GRANT reports_read TO alan")
                os.environ["LAPSE_RECORD_PG_DSN"] = postgres.dsn()
                integration = {
                    "name": "pg",
                    "kind": "postgres",
                    "config": {"dsn_env": "LAPSE_RECORD_PG_DSN", "insecure": True},
                }
                await api.ok("ada@example.com", "POST", "/api/integrations", integration)
                await api.ok("ada@example.com", "POST", "/api/integrations/pg/discover")
                await _save(env, names.discovery_id("pg"), f"{tag}-discovery")
            finally:
                postgres.stop()
            await clear_sync_schedules(env.client)
            with contextlib.suppress(RPCError):
                await env.client.get_schedule_handle(names.discovery_id("pg")).delete()


async def record_timers(tag: str) -> None:
    """The step timers, and an extension near a grant's end: hours of a request's life, recorded on the
    time-skipping server."""
    from tests.workflows.conftest import start_time_skipping
    from tests.workflows.timer_support import extended_near_its_end, reminded_then_escalated, requests

    async with await start_time_skipping() as env, requests(env) as running:
        scenarios = {"reminded-escalated": reminded_then_escalated, "extended-near-end": extended_near_its_end}
        for name, scenario in scenarios.items():
            handle = await scenario(env, running)
            await _save(env, handle.id, f"{tag}-{name}")


async def record_break_glass(tag: str) -> None:
    """An emergency request's run, which starts its post-hoc review as a child once the grant is made, and that
    review, which a reviewer confirms: recorded on the time-skipping server with the break-glass tests' stand-in
    activities. The request's run is ended by hand once its review is over (a held grant, with an abandoned
    child, would keep time from skipping)."""
    from access.break_glass import Verdict, VerdictInput
    from tests.workflows.conftest import start_time_skipping
    from tests.workflows.test_break_glass_review import REVIEWER, Stubs, _emergency, break_glass_worker
    from workflows.break_glass import BreakGlassReviewWorkflow

    env = await start_time_skipping()
    try:
        stubs, queue = Stubs(), "record-break-glass"
        async with break_glass_worker(env, queue, stubs):
            request_id = await _emergency(env, queue)
            review = env.client.get_workflow_handle(names.break_glass_workflow_id(request_id))
            await eventually(lambda: stubs.reviews, what="the review to open")
            verdict = VerdictInput(request_id=request_id, actor=REVIEWER, verdict=Verdict.CONFIRM, comment="real")
            await review.execute_update(BreakGlassReviewWorkflow.decide, verdict)
            await review.result()
            request = env.client.get_workflow_handle(names.request_workflow_id(request_id))
            await request.terminate("recorded")
            await _save(env, request.id, f"{tag}-break-glass-request")
            await _save(env, review.id, f"{tag}-break-glass-review")
    finally:
        await env.shutdown()


async def _finished_run(env: WorkflowEnvironment, workflow_type: str) -> str:
    """The id of the newest finished run of a workflow type (the schedules name their runs)."""

    async def newest() -> str | None:
        query = f'WorkflowType="{workflow_type}" AND ExecutionStatus="Completed"'
        async for execution in env.client.list_workflows(query):
            return execution.id
        return None

    found = await eventually(newest, what=f"a {workflow_type} run to finish")
    assert found is not None
    return found


async def _save(
    env: WorkflowEnvironment, workflow_id: str, name: str, run_id: str | None = None, **recorded_with: Any
) -> None:
    history = await env.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    # The workflow id is kept beside the events: since v4 every payload is sealed for its workflow.
    # ``recorded_with``: settings of the workflow code the run had, which its replay must have too.
    saved = {"workflowId": workflow_id, **recorded_with, **json.loads(history.to_json())}
    (HERE / f"{name}.json").write_text(json.dumps(saved))
    print(f"recorded {name} ({len(history.events)} events)")


if __name__ == "__main__":
    tag = sys.argv[1] if len(sys.argv) > 1 else "v1"
    only = {"timers": record_timers, "break-glass": record_break_glass}
    asyncio.run(only[sys.argv[2]](tag) if sys.argv[2:] and sys.argv[2] in only else record(tag))
    sys.stdout.flush()
    os._exit(0)

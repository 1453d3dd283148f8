"""Record workflow histories for the replay test: ``python -m tests.histories.record``.

Run it when the workflow changes in a way worth pinning; keep the old files, since
requests started under old code are still running somewhere.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.api.app import create_app
from tests.conftest import Api, FakeTarget, make_settings
from worker import build_worker
from workflows import names

HERE = Path(__file__).parent


async def record(tag: str) -> None:
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=[names.REQUESTER, names.RESOURCE, names.ROLE, names.STATE, names.EXPIRES_AT],
    ) as env:
        tmp = tempfile.mkdtemp(prefix="lapse-record-")
        target = FakeTarget()
        settings = make_settings(Path(tmp), env.client.service_client.config.target_host, approval_timeout="PT2S")
        app = create_app(settings, client=env.client)
        async with (
            build_worker(env.client, settings, task_queue=settings.task_queue, connectors={"ledger": target.connector}),
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

            for name, request_id in scenarios.items():
                await api.wait_for(request_id, "expired", "revoked", "denied", "timed_out", "cancelled", timeout=60)
                history = await env.client.get_workflow_handle(names.request_workflow_id(request_id)).fetch_history()
                (HERE / f"{tag}-{name}.json").write_text(history.to_json())
                print(f"recorded {tag}-{name} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
    sys.stdout.flush()
    os._exit(0)

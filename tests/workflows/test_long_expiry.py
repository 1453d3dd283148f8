"""Long timers on the time-skipping test server: a day-long wait is seconds of test time."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from access.types import (
    AccessRequestInput,
    Approver,
    ApproverKind,
    RequestPlan,
    RequestState,
    RequestStatus,
    StepPlan,
)
from tests.conftest import FakeTarget, make_settings
from worker import build_worker
from workflows import names
from workflows.access_request import AccessRequestWorkflow

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")


def _input(request_id: str, *, duration: timedelta, steps: list[StepPlan]) -> AccessRequestInput:
    return AccessRequestInput(
        id=request_id,
        requester="katherine@example.com",
        role="ledger/prod-db/read",
        duration=duration,
        justification="quarter close",
        plan=RequestPlan(policy="read-only", rule="longer read", max_duration=timedelta(hours=8), steps=steps),
        approval_timeout=timedelta(hours=24),
        created_at=datetime.now(UTC),
    )


async def _time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=TEST_SERVER
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME
                if key is names.EXPIRES_AT
                else IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in (names.REQUESTER, names.RESOURCE, names.ROLE, names.STATE, names.EXPIRES_AT)
            },
        )
    )
    return env


async def _run(tmp_path: Path, *, duration: timedelta, steps: list[StepPlan]) -> tuple[RequestStatus, FakeTarget]:
    """Run one request to its end on the time-skipping server; return its result and the target."""
    target = FakeTarget()
    async with await _time_skipping() as env:
        settings = make_settings(tmp_path, "unused:0")
        async with build_worker(
            env.client, settings, task_queue=settings.task_queue, connectors={"ledger": target.connector}
        ):
            request_id = uuid.uuid4().hex[:10]
            result = await env.client.execute_workflow(
                AccessRequestWorkflow.run,
                _input(request_id, duration=duration, steps=steps),
                id=f"access-request-{request_id}",
                task_queue=settings.task_queue,
            )
    return result, target


async def test_eight_hour_grant_lapses_after_eight_hours(tmp_path: Path) -> None:
    result, target = await _run(tmp_path, duration=timedelta(hours=8), steps=[])
    assert result.state is RequestState.EXPIRED
    assert result.granted_at is not None and result.expires_at is not None and result.ended_at is not None
    assert result.expires_at - result.granted_at == timedelta(hours=8)
    assert result.ended_at >= result.expires_at
    assert [call[0] for call in target.calls] == ["grant", "revoke"]
    assert target.held == set()


async def test_undecided_request_times_out_after_a_day(tmp_path: Path) -> None:
    step = StepPlan(
        name="manager", approvers=[Approver(kind=ApproverKind.MANAGER)], quorum=1, eligible=["ada@example.com"]
    )
    result, target = await _run(tmp_path, duration=timedelta(hours=2), steps=[step])
    assert result.state is RequestState.TIMED_OUT
    assert result.ended_at is not None and result.ended_at - result.created_at >= timedelta(hours=24)
    assert "no decision on step 'manager' within P1D" in (result.end_reason or "")
    assert target.calls == []

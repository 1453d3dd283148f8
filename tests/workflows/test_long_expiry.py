"""Long timers on the time-skipping test server with the real activities: a day-long wait is seconds of test time."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from access import names
from access.connectors import PermanentError, Target
from access.grants import LedgerRevokeInput
from access.limits import HISTORY_EVENTS_BEFORE_CONTINUE
from access.requests import AccessRequestInput, RequestState, RequestStatus
from access.types import Approver, ApproverKind, RequestPlan, StepPlan
from store.db import session_scope
from store.tables import Grant
from tests.conftest import FakeTarget, make_settings
from worker import build_worker
from workflows.access_request import REVOKE_PERMANENT_PAUSE, AccessRequestWorkflow
from workflows.grants import GrantRevokeWorkflow


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


async def _run(
    env: WorkflowEnvironment, tmp_path: Path, *, duration: timedelta, steps: list[StepPlan]
) -> tuple[RequestStatus, FakeTarget]:
    """Run one request to its end on the time-skipping server; return its result and the target."""
    target = FakeTarget()
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


async def test_eight_hour_grant_lapses_after_eight_hours(time_skipping: WorkflowEnvironment, tmp_path: Path) -> None:
    result, target = await _run(time_skipping, tmp_path, duration=timedelta(hours=8), steps=[])
    assert result.state is RequestState.EXPIRED
    assert result.granted_at is not None and result.expires_at is not None and result.ended_at is not None
    assert result.expires_at - result.granted_at == timedelta(hours=8)
    assert result.ended_at >= result.expires_at
    assert [call[0] for call in target.calls] == ["grant", "revoke"]
    assert target.held == set()


async def test_undecided_request_times_out_after_a_day(time_skipping: WorkflowEnvironment, tmp_path: Path) -> None:
    step = StepPlan(
        name="manager", approvers=[Approver(kind=ApproverKind.MANAGER)], quorum=1, eligible=["ada@example.com"]
    )
    result, target = await _run(time_skipping, tmp_path, duration=timedelta(hours=2), steps=[step])
    assert result.state is RequestState.TIMED_OUT
    assert result.ended_at is not None and result.ended_at - result.created_at >= timedelta(hours=24)
    assert "no decision on step 'manager' within P1D" in (result.end_reason or "")
    assert target.calls == []


class _RevokeRefused(FakeTarget):
    """A target that refuses the revoke for good (a rotated password, say) this many times, then accepts it."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def revoke(self, account: str, target: Target) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            self.calls.append(("revoke-refused", account, target.path))
            raise PermanentError("authentication failed (injected by the test)")
        super().revoke(account, target)


async def test_f2_days_of_failing_revokes_keep_every_run_small(
    time_skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    # A revoke refused for good is retried every REVOKE_PERMANENT_PAUSE: the run continues as new long
    # before Temporal would terminate it, and the grant is revoked once the target accepts again.
    # `make test` holds the revoke failing for a week (several continues-as-new); `make chaos` for 30 days.
    days = float(os.environ.get("LAPSE_FAILING_REVOKE_DAYS", "7"))
    refusals = int(days * timedelta(days=1) / REVOKE_PERMANENT_PAUSE)
    target = _RevokeRefused(refusals)
    env = time_skipping
    settings = make_settings(tmp_path, "unused:0")
    async with build_worker(
        env.client, settings, task_queue=settings.task_queue, connectors={"ledger": target.connector}
    ):
        request_id = uuid.uuid4().hex[:10]
        handle = await env.client.start_workflow(
            AccessRequestWorkflow.run,
            _input(request_id, duration=timedelta(hours=1), steps=[]),
            id=f"access-request-{request_id}",
            task_queue=settings.task_queue,
        )
        result = await handle.result()
        lengths = await _run_lengths(env, handle.id, handle.result_run_id)
    assert result.state is RequestState.EXPIRED
    assert target.refusals == 0 and target.held == set()
    assert len(lengths) > refusals * 10 // HISTORY_EVENTS_BEFORE_CONTINUE  # it did continue as new
    assert max(lengths) < 10_000


async def _run_lengths(env: WorkflowEnvironment, workflow_id: str, run_id: str | None) -> list[int]:
    """The history length of each run of a workflow, following its continue-as-new chain from ``run_id``."""
    lengths = []
    while run_id:
        history = await env.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        continued = last.workflow_execution_continued_as_new_event_attributes
        run_id = (
            continued.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return lengths


async def test_f2_an_admins_revoke_failing_for_days_continues_as_new(
    time_skipping: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The admin's revoke of an external grant (from the permissions table) retries for ever, like a
    # request's: its run hands on to a fresh one long before Temporal's limits (threshold lowered here).
    monkeypatch.setattr("access.limits.HISTORY_EVENTS_BEFORE_CONTINUE", 30)
    target = _RevokeRefused(20)
    env = time_skipping
    settings = make_settings(tmp_path, "unused:0")
    with session_scope(settings.db_url) as session:
        grant = Grant(
            account="katherine@example.com",
            role="ledger/prod-db/read",
            path="external",
            granted_at=datetime.now(UTC),
        )
        session.add(grant)
        session.flush()
        grant_id = grant.id
    assert grant_id is not None
    target.held.add(("katherine@example.com", "ledger/prod-db/read"))
    async with build_worker(
        env.client, settings, task_queue=settings.task_queue, connectors={"ledger": target.connector}
    ):
        handle = await env.client.start_workflow(
            GrantRevokeWorkflow.run,
            LedgerRevokeInput(grant_id=grant_id, actor="ada@example.com", comment="left the project"),
            id=names.grant_revoke_id(grant_id),
            task_queue=settings.task_queue,
        )
        result = await handle.result()
        lengths = await _run_lengths(env, handle.id, handle.result_run_id)
    assert result.path == "external" and target.refusals == 0 and target.held == set()
    assert len(lengths) > 1 and max(lengths) < 60

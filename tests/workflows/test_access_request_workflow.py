"""AccessRequestWorkflow alone, on the time-skipping server: hours of a grant in a moment of test time.

Its activities are stand-ins registered under the real names (``access.names``): they record what the
workflow asked for and answer as the real ones would, so each test reads as what reached the target and
what the app DB was told. The lifecycle through the API and a real worker is in tests/e2e/test_request_lifecycle.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from access import names
from access.requests import (
    AccessRequestInput,
    DecisionInput,
    EndInput,
    ExtendInput,
    GrantInput,
    GrantResult,
    RecordInput,
    RequestState,
    RequestStatus,
    ResolveInput,
    RevokeInput,
    RevokeResult,
)
from access.types import Approver, ApproverKind, RequestPlan, StepPlan
from tests.support import eventually
from worker import SANDBOX_RESTRICTIONS
from workflows.access_request import AccessRequestWorkflow

REQUESTER, MANAGER = "alan@example.com", "linus@example.com"
ROLE = "ledger/payments-api/deploy"
EIGHT_HOURS = timedelta(hours=8)


@dataclass
class StubActivities:
    """The request's activities, answering at once: each call is kept for the test to read."""

    records: list[RecordInput] = field(default_factory=list)
    provisions: list[GrantInput] = field(default_factory=list)
    revokes: list[RevokeInput] = field(default_factory=list)

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_request, self.resolve_approvers, self.provision_grant, self.revoke_grant]

    @activity.defn(name=names.RECORD_REQUEST)
    async def record_request(self, input: RecordInput) -> None:
        self.records.append(input)

    @activity.defn(name=names.RESOLVE_APPROVERS)
    async def resolve_approvers(self, input: ResolveInput) -> list[str]:
        return [MANAGER]

    @activity.defn(name=names.PROVISION_GRANT)
    async def provision_grant(self, input: GrantInput) -> GrantResult:
        self.provisions.append(input)
        # The server's clock, which skips with the workflow's (the real activity reads the wall clock).
        now = activity.info().current_attempt_scheduled_time
        return GrantResult(account=input.requester, granted_at=now, shared=False)

    @activity.defn(name=names.REVOKE_GRANT)
    async def revoke_grant(self, input: RevokeInput) -> RevokeResult:
        self.revokes.append(input)
        return RevokeResult(revoked_at=activity.info().current_attempt_scheduled_time, still_held=False)

    def states(self) -> list[RequestState]:
        """The states the app DB was told, in order, each once."""
        told: list[RequestState] = []
        for record in self.records:
            if not told or told[-1] is not record.status.state:
                told.append(record.status.state)
        return told

    def actions(self) -> list[str]:
        """The audit events the app DB was given, in order."""
        return [event.action for record in self.records for event in record.events]


@dataclass
class Lapse:
    """A worker for the request workflow alone, on its own task queue of the time-skipping server."""

    env: WorkflowEnvironment
    task_queue: str
    activities: StubActivities

    async def start(
        self, *, duration: timedelta = EIGHT_HOURS, approval: bool = True
    ) -> WorkflowHandle[Any, RequestStatus]:
        """Start a request, as the API does, and return once the app DB has it."""
        request_id = uuid.uuid4().hex[:10]
        handle = await self.env.client.start_workflow(
            AccessRequestWorkflow.run,
            AccessRequestInput(
                id=request_id,
                requester=REQUESTER,
                role=ROLE,
                duration=duration,
                justification="hotfix for INC-1",
                plan=_plan(approval),
                approval_timeout=timedelta(hours=24),
                created_at=datetime.now(UTC),
            ),
            id=names.request_workflow_id(request_id),
            task_queue=self.task_queue,
            search_attributes=names.start_search_attributes(REQUESTER, ROLE),
        )
        await handle.execute_update(AccessRequestWorkflow.submit)
        return handle

    async def active(self, handle: WorkflowHandle[Any, RequestStatus]) -> RequestStatus:
        """The status once the grant is made (provisioning takes a moment of real time, none of the clock's)."""
        return await eventually(
            lambda: handle.query(AccessRequestWorkflow.status),
            until=lambda status: status.state is RequestState.ACTIVE,
            what=f"{handle.id} to be active",
        )


def _plan(approval: bool) -> RequestPlan:
    steps = [StepPlan(name="manager", approvers=[Approver(kind=ApproverKind.MANAGER)], quorum=1, eligible=[MANAGER])]
    return RequestPlan(
        policy="deploys",
        rule="manager approves" if approval else "on call",
        max_duration=timedelta(hours=12),
        steps=steps if approval else [],
    )


def _request_id(handle: WorkflowHandle[Any, Any]) -> str:
    return handle.id.removeprefix(names.request_workflow_id(""))


@pytest_asyncio.fixture
async def lapse(time_skipping: WorkflowEnvironment) -> AsyncIterator[Lapse]:
    stubs = StubActivities()
    task_queue = f"workflow-test-{uuid.uuid4().hex[:8]}"
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[AccessRequestWorkflow],
        activities=stubs.all(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS),
    ):
        yield Lapse(time_skipping, task_queue, stubs)


async def test_approved_request_is_granted_then_revoked_once_when_its_eight_hours_are_up(lapse: Lapse) -> None:
    handle = await lapse.start()
    assert lapse.activities.provisions == []  # nothing reaches the target before the approval

    ack = await handle.execute_update(
        AccessRequestWorkflow.approve, DecisionInput(actor=MANAGER, comment="ok", request_id=_request_id(handle))
    )
    assert ack.state in (RequestState.PROVISIONING, RequestState.ACTIVE)
    ended = await handle.result()  # the clock skips the eight hours

    assert ended.state is RequestState.EXPIRED
    assert ended.granted_at is not None and ended.expires_at is not None and ended.ended_at is not None
    assert ended.expires_at - ended.granted_at == EIGHT_HOURS
    assert ended.ended_at >= ended.expires_at
    assert [p.role for p in lapse.activities.provisions] == [ROLE]
    assert [(r.requester, r.role) for r in lapse.activities.revokes] == [(REQUESTER, ROLE)]
    assert lapse.activities.states() == [
        RequestState.PENDING,
        RequestState.PROVISIONING,
        RequestState.ACTIVE,
        RequestState.EXPIRED,
    ]
    assert lapse.activities.actions().count("grant.expired") == 1


async def test_denied_request_provisions_nothing(lapse: Lapse) -> None:
    handle = await lapse.start()

    await handle.execute_update(
        AccessRequestWorkflow.deny, DecisionInput(actor=MANAGER, comment="not today", request_id=_request_id(handle))
    )
    ended = await handle.result()

    assert (ended.state, ended.ended_by, ended.end_reason) == (RequestState.DENIED, MANAGER, "not today")
    assert ended.granted_at is None
    assert lapse.activities.provisions == [] and lapse.activities.revokes == []
    assert lapse.activities.states() == [RequestState.PENDING, RequestState.DENIED]


async def test_revoke_before_expiry_revokes_at_once(lapse: Lapse) -> None:
    handle = await lapse.start(approval=False)
    active = await lapse.active(handle)

    ack = await handle.execute_update(
        AccessRequestWorkflow.revoke, EndInput(actor=REQUESTER, comment="done early", request_id=_request_id(handle))
    )
    ended = await handle.result()

    assert ack.state is RequestState.REVOKED
    assert (ended.state, ended.ended_by, ended.end_reason) == (RequestState.REVOKED, REQUESTER, "done early")
    assert active.expires_at is not None and ended.ended_at is not None and ended.ended_at < active.expires_at
    assert len(lapse.activities.provisions) == 1
    assert len(lapse.activities.revokes) == 1  # and not again at the expiry


async def test_extension_moves_the_end_and_tells_the_target(lapse: Lapse) -> None:
    handle = await lapse.start(duration=timedelta(hours=1), approval=False)
    active = await lapse.active(handle)
    assert active.expires_at is not None

    ack = await handle.execute_update(
        AccessRequestWorkflow.extend,
        ExtendInput(
            request_id=_request_id(handle),
            actor=REQUESTER,
            duration=timedelta(hours=2),
            justification="the fix needs longer",
            plan=_plan(approval=False),
        ),
    )
    ended = await handle.result()

    assert ack.expires_at == active.expires_at + timedelta(hours=2)
    assert ended.state is RequestState.EXPIRED
    assert ended.expires_at == ack.expires_at and ended.ended_at is not None and ended.ended_at >= ack.expires_at
    # The target that enforces an end itself (an ephemeral login's expiry) is given the new one.
    assert [p.expires_at for p in lapse.activities.provisions] == [None, ack.expires_at]
    assert len(lapse.activities.revokes) == 1

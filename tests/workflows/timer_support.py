"""The request workflow with stand-in activities, for the step timers' tests and recordings.

The activities answer at once and keep what they were asked; approvers resolve from a fixed directory, so a
test can tell the step's approvers from those it escalates to. ``tests/histories/record.py`` runs the
scenarios at the end of this module on the time-skipping server to record their histories for replay.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from access import names
from access.requests import (
    AccessRequestInput,
    DecisionInput,
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
from access.types import Approver, ApproverKind, AuditEntry, RequestPlan, StepPlan
from tests.support import eventually
from worker import SANDBOX_RESTRICTIONS
from workflows.access_request import AccessRequestWorkflow

REQUESTER, MANAGER, FALLBACK = "alan@example.com", "linus@example.com", "grace@example.com"
ROLE = "ledger/payments-api/deploy"
SECURITY = Approver(kind=ApproverKind.GROUP, name="security")
DIRECTORY = {ApproverKind.MANAGER: [MANAGER], ApproverKind.GROUP: [FALLBACK, REQUESTER]}
"""Who each kind of approver is; the requester is in ``security`` too, and is never added for it."""


@dataclass
class Stubs:
    records: list[RecordInput] = field(default_factory=list)

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_request, self.resolve_approvers, self.provision_grant, self.revoke_grant]

    @activity.defn(name=names.RECORD_REQUEST)
    async def record_request(self, input: RecordInput) -> None:
        self.records.append(input)

    @activity.defn(name=names.RESOLVE_APPROVERS)
    async def resolve_approvers(self, input: ResolveInput) -> list[str]:
        people = {p for approver in input.approvers for p in DIRECTORY[approver.kind]}
        return sorted(people - {input.requester})

    @activity.defn(name=names.PROVISION_GRANT)
    async def provision_grant(self, input: GrantInput) -> GrantResult:
        now = activity.info().current_attempt_scheduled_time  # the server's clock, which skips
        return GrantResult(account=input.requester, granted_at=now, shared=False)

    @activity.defn(name=names.REVOKE_GRANT)
    async def revoke_grant(self, input: RevokeInput) -> RevokeResult:
        return RevokeResult(revoked_at=activity.info().current_attempt_scheduled_time, still_held=False)

    def events(self, action: str) -> list[AuditEntry]:
        """The audit events of ``action`` the app DB was given, in order."""
        return [event for record in self.records for event in record.events if event.action == action]


def step(**timers: Any) -> StepPlan:
    """The manager's step, with reminders and escalation as given."""
    return StepPlan(
        name="manager", approvers=[Approver(kind=ApproverKind.MANAGER)], quorum=1, eligible=[MANAGER], **timers
    )


def plan(*steps: StepPlan) -> RequestPlan:
    return RequestPlan(policy="deploys", rule="manager approves", max_duration=timedelta(hours=12), steps=list(steps))


@dataclass
class Requests:
    """Starts requests on a worker of its own task queue."""

    env: WorkflowEnvironment
    task_queue: str
    stubs: Stubs
    started: list[WorkflowHandle[Any, RequestStatus]] = field(default_factory=list)

    async def start(
        self,
        request_plan: RequestPlan,
        *,
        duration: timedelta = timedelta(hours=8),
        approval_timeout: timedelta = timedelta(hours=24),
    ) -> WorkflowHandle[Any, RequestStatus]:
        request_id = uuid.uuid4().hex[:10]
        handle = await self.env.client.start_workflow(
            AccessRequestWorkflow.run,
            AccessRequestInput(
                id=request_id,
                requester=REQUESTER,
                role=ROLE,
                duration=duration,
                justification="hotfix for INC-1",
                plan=request_plan,
                approval_timeout=approval_timeout,
                created_at=datetime.now(UTC),
            ),
            id=names.request_workflow_id(request_id),
            task_queue=self.task_queue,
            search_attributes=names.start_search_attributes(REQUESTER, ROLE),
        )
        self.started.append(handle)
        await handle.execute_update(AccessRequestWorkflow.submit)
        return handle

    async def status(
        self, handle: WorkflowHandle[Any, RequestStatus], until: Callable[[RequestStatus], object]
    ) -> RequestStatus:
        """The status once ``until`` holds (what a fired timer did takes a moment of real time)."""
        return await eventually(
            lambda: handle.query(AccessRequestWorkflow.status), until=until, what=f"{handle.id} to move on"
        )


@contextlib.asynccontextmanager
async def requests(env: WorkflowEnvironment) -> AsyncIterator[Requests]:
    stubs = Stubs()
    task_queue = f"timers-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[AccessRequestWorkflow],
        activities=stubs.all(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS),
    ):
        running = Requests(env, task_queue, stubs)
        try:
            yield running
        finally:
            # A run left waiting with no worker keeps the server busy, and it then skips no time for the next test.
            for handle in running.started:
                with contextlib.suppress(RPCError):
                    await handle.terminate("the test is over")


def request_id(handle: WorkflowHandle[Any, Any]) -> str:
    return handle.id.removeprefix(names.request_workflow_id(""))


async def decide(handle: WorkflowHandle[Any, Any], actor: str, *, approved: bool = True) -> None:
    update = AccessRequestWorkflow.approve if approved else AccessRequestWorkflow.deny
    await handle.execute_update(update, DecisionInput(actor=actor, request_id=request_id(handle)))


async def extend(handle: WorkflowHandle[Any, Any], duration: timedelta, extension_plan: RequestPlan) -> None:
    arg = ExtendInput(
        request_id=request_id(handle), actor=REQUESTER, duration=duration, justification="longer", plan=extension_plan
    )
    await handle.execute_update(AccessRequestWorkflow.extend, arg)


# --- the recorded scenarios (tests/histories/record.py) ---------------------------------------


async def reminded_then_escalated(env: WorkflowEnvironment, requests: Requests) -> WorkflowHandle[Any, Any]:
    """Reminded after an hour and every hour, escalated after 2h30m, approved by the person it escalated to."""
    timers = step(
        remind_after=timedelta(hours=1),
        remind_every=timedelta(hours=1),
        escalate_after=timedelta(hours=2, minutes=30),
        escalate_to=[SECURITY],
    )
    handle = await requests.start(plan(timers), duration=timedelta(minutes=5))
    await env.sleep(timedelta(hours=3))
    await requests.status(handle, lambda s: s.steps[0].escalated_at is not None and s.steps[0].reminders == 3)
    await decide(handle, FALLBACK)
    ended = await handle.result()
    assert ended.state is RequestState.EXPIRED
    return handle


async def extended_near_its_end(env: WorkflowEnvironment, requests: Requests) -> WorkflowHandle[Any, Any]:
    """An hour's grant extended 55 minutes in (its extension's step reminded once), then held to its new end.
    Its run times no expiring-soon warning: the scan of the grants ledger gives those (``store.expiry_warnings``);
    the v5 recording of this scenario (``warned-extended``) holds the warning timers runs had before."""
    handle = await requests.start(plan(), duration=timedelta(hours=1))
    await requests.status(handle, lambda s: s.state is RequestState.ACTIVE)
    await env.sleep(timedelta(minutes=55))
    await extend(handle, timedelta(hours=2), plan(step(remind_after=timedelta(minutes=2))))
    await env.sleep(timedelta(minutes=3))
    await requests.status(handle, lambda s: s.extensions[-1].steps[0].reminders == 1)
    await decide(handle, MANAGER)
    ended = await handle.result()
    assert ended.state is RequestState.EXPIRED
    return handle

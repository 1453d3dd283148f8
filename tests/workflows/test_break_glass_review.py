"""BreakGlassReviewWorkflow on the time-skipping server: a day of silence leaves a review unreviewed, flagged and
escalated; an emergency grant's run starts its review as an abandoned child once the grant is made, which its
requester cannot decide and a reviewer confirms.

The activities are stand-ins under the real names; the end-to-end flow through the API is in
tests/e2e/test_break_glass.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from access import names
from access.break_glass import (
    BreakGlassReview,
    BreakGlassReviewInput,
    RecordReviewInput,
    ReviewState,
    Verdict,
    VerdictInput,
)
from access.requests import (
    AccessRequestInput,
    GrantInput,
    GrantResult,
    RecordInput,
    RevokeInput,
    RevokeResult,
)
from access.types import BreakGlassPlan, RequestPlan
from tests.support import eventually
from tests.workflows.conftest import start_time_skipping
from worker import SANDBOX_RESTRICTIONS
from workflows.access_request import AccessRequestWorkflow
from workflows.break_glass import BreakGlassReviewWorkflow

REQUESTER, REVIEWER, SECURITY = "alan@example.com", "linus@example.com", "ada@example.com"
ROLE = "ledger/payments-api/deploy"


@dataclass
class Stubs:
    records: list[RecordInput] = field(default_factory=list)
    reviews: list[RecordReviewInput] = field(default_factory=list)
    revokes: list[RevokeInput] = field(default_factory=list)

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_request, self.provision_grant, self.revoke_grant, self.record_break_glass_review]

    @activity.defn(name=names.RECORD_REQUEST)
    async def record_request(self, input: RecordInput) -> None:
        self.records.append(input)

    @activity.defn(name=names.PROVISION_GRANT)
    async def provision_grant(self, input: GrantInput) -> GrantResult:
        return GrantResult(
            account=input.requester, granted_at=activity.info().current_attempt_scheduled_time, shared=False
        )

    @activity.defn(name=names.REVOKE_GRANT)
    async def revoke_grant(self, input: RevokeInput) -> RevokeResult:
        self.revokes.append(input)
        return RevokeResult(revoked_at=activity.info().current_attempt_scheduled_time, still_held=False)

    @activity.defn(name=names.RECORD_BREAK_GLASS_REVIEW)
    async def record_break_glass_review(self, input: RecordReviewInput) -> list[str]:
        self.reviews.append(input)
        return [SECURITY] if input.review.state.flagged else []


@pytest_asyncio.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: a request run here starts a child it abandons, and a run left
    behind on the shared server would stop time from skipping for every later test."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def lapse(time_skipping: WorkflowEnvironment) -> AsyncIterator[tuple[WorkflowEnvironment, str, Stubs]]:
    stubs, queue = Stubs(), f"break-glass-{uuid.uuid4().hex[:8]}"
    async with break_glass_worker(time_skipping, queue, stubs):
        yield time_skipping, queue, stubs


def break_glass_worker(env: WorkflowEnvironment, queue: str, stubs: Stubs) -> Worker:
    """A worker of the request and review workflows, in the worker's own sandbox, with ``stubs`` for activities
    (the history recorder's too: ``tests/histories/record.py``)."""
    return Worker(
        env.client,
        task_queue=queue,
        workflows=[AccessRequestWorkflow, BreakGlassReviewWorkflow],
        activities=stubs.all(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS),
    )


PLAN = BreakGlassPlan(reviewers=[REVIEWER], notify=[SECURITY], review_within=timedelta(hours=24), skipped_rule="m")


async def _emergency(env: WorkflowEnvironment, queue: str) -> str:
    request_id = uuid.uuid4().hex[:10]
    plan = RequestPlan(
        policy="deploys", rule="break-glass", max_duration=timedelta(hours=1), steps=[], break_glass=PLAN
    )
    handle = await env.client.start_workflow(
        AccessRequestWorkflow.run,
        AccessRequestInput(
            id=request_id,
            requester=REQUESTER,
            role=ROLE,
            duration=timedelta(hours=1),
            justification="prod is down",
            plan=plan,
            approval_timeout=timedelta(hours=24),
            created_at=datetime.now(UTC),
        ),
        id=names.request_workflow_id(request_id),
        task_queue=queue,
        search_attributes=names.start_search_attributes(REQUESTER, ROLE),
    )
    await handle.execute_update(AccessRequestWorkflow.submit)
    return request_id


async def test_a_day_without_a_verdict_leaves_the_review_unreviewed_and_flagged(
    lapse: tuple[WorkflowEnvironment, str, Stubs],
) -> None:
    env, queue, stubs = lapse
    granted_at = datetime.now(UTC)
    review = await env.client.start_workflow(
        BreakGlassReviewWorkflow.run,
        BreakGlassReviewInput(
            request_id="k3v9q2m7xw",
            requester=REQUESTER,
            role=ROLE,
            justification="prod is down",
            plan=PLAN,
            granted_at=granted_at,
        ),
        id=names.break_glass_workflow_id(f"k3v9q2m7xw-{uuid.uuid4().hex[:6]}"),
        task_queue=queue,
    )
    ended: BreakGlassReview = await review.result()  # a day of the server's clock, skipped
    assert ended.state is ReviewState.UNREVIEWED and ended.escalated_to == [SECURITY]
    assert ended.deadline == granted_at + timedelta(hours=24) and ended.decided_by is None
    assert [r.action for r in stubs.reviews] == ["break_glass.opened", "break_glass.unreviewed"]


async def test_an_emergency_grant_opens_its_review_the_requester_cannot_review_it_a_reviewer_confirms(
    lapse: tuple[WorkflowEnvironment, str, Stubs],
) -> None:
    env, queue, stubs = lapse
    request_id = await _emergency(env, queue)
    review = env.client.get_workflow_handle(names.break_glass_workflow_id(request_id))
    await eventually(lambda: stubs.reviews, what="the review to open")
    actions = [event.action for record in stubs.records for event in record.events]
    assert "grant.provisioned" in actions and stubs.reviews[0].action == "break_glass.opened"
    described = await review.describe()
    assert described.parent_id == names.request_workflow_id(request_id)

    own = VerdictInput(request_id=request_id, actor=REQUESTER, is_admin=True, verdict=Verdict.CONFIRM)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await review.execute_update(BreakGlassReviewWorkflow.decide, own)
    assert "your own" in str(refused.value.cause)

    verdict = VerdictInput(request_id=request_id, actor=REVIEWER, verdict=Verdict.CONFIRM, comment="real incident")
    confirmed = await review.execute_update(BreakGlassReviewWorkflow.decide, verdict)
    assert confirmed.state is ReviewState.CONFIRMED and confirmed.decided_by == REVIEWER
    assert [r.action for r in stubs.reviews] == ["break_glass.opened", "break_glass.confirmed"]
    # The time-skipping server cannot wait on a run with an abandoned child: end the request here.
    await env.client.get_workflow_handle(names.request_workflow_id(request_id)).terminate("test over")

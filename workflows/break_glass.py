"""BreakGlassReviewWorkflow: the mandatory review of an emergency grant, after the fact.

An emergency request's run (``AccessRequestWorkflow``) starts it by its type name as an abandoned child once the
grant is made (``workflows.access_request.open_review``), so the review outlives the grant. It waits up to the
deadline for one verdict: a reviewer (a skipped approver, never the requester) or an admin confirms or condemns
it. A condemned one, or one nobody reviewed in time, is flagged and escalated; the service that takes a condemn
revokes the grant at once. Each state is written to the app DB with its audit event and notices by a local
activity (``activities.break_glass``).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow

from workflows.request_checks import refused

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.break_glass import (
        BreakGlassReview,
        BreakGlassReviewInput,
        RecordReviewInput,
        ReviewState,
        Verdict,
        VerdictInput,
        deadline_of,
        verdict_refusal,
    )
    from access.errors import RefusalKind

_ENDINGS = {
    Verdict.CONFIRM: (ReviewState.CONFIRMED, "break_glass.confirmed"),
    Verdict.CONDEMN: (ReviewState.CONDEMNED, "break_glass.condemned"),
}


@workflow.defn(name=names.BREAK_GLASS_REVIEW_WORKFLOW)
class BreakGlassReviewWorkflow:
    """Opens the review, takes one verdict before the deadline, or marks it unreviewed; records each state."""

    @workflow.init
    def __init__(self, input: BreakGlassReviewInput) -> None:
        self._review = BreakGlassReview(
            request_id=input.request_id,
            requester=input.requester,
            role=input.role,
            justification=input.justification,
            opened_at=workflow.now(),
            deadline=deadline_of(input.granted_at, input.plan.review_within),
            reviewers=input.plan.reviewers,
            notify=input.plan.notify,
            expires_at=input.expires_at,
        )
        self._opened = False

    @workflow.run
    async def run(self, input: BreakGlassReviewInput) -> BreakGlassReview:
        await self._record("break_glass.opened")
        self._opened = True
        review = self._review
        with contextlib.suppress(TimeoutError):  # the deadline passed: unreviewed, unless a verdict just came
            await workflow.wait_condition(
                lambda: review.state is not ReviewState.OPEN,
                timeout=max(review.deadline - workflow.now(), timedelta(0)),
            )
        if review.state is ReviewState.OPEN:
            review.state = ReviewState.UNREVIEWED
            review.decided_at = workflow.now()
            await self._record("break_glass.unreviewed")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return review

    @workflow.query
    def status(self) -> BreakGlassReview:
        return self._review

    @workflow.update
    async def decide(self, input: VerdictInput) -> BreakGlassReview:
        """A reviewer's or an admin's verdict; answers once it is recorded."""
        self._check(input)
        review = self._review
        review.state, action = _ENDINGS[input.verdict]
        review.decided_by = input.actor
        review.decided_at = workflow.now()
        review.comment = input.comment
        await self._record(action)
        return review

    @decide.validator
    def _validate_decide(self, input: VerdictInput) -> None:
        self._check(input)

    def _check(self, input: VerdictInput) -> None:
        refusal = verdict_refusal(self._review, input)
        if refusal is not None:
            raise refused(refusal.kind, refusal.message, field=refusal.field)
        if not self._opened:
            raise refused(RefusalKind.CONFLICT, "the review is still being opened: try again in a moment")

    async def _record(self, action: str) -> None:
        escalated: list[str] = await workflow.execute_local_activity(
            names.RECORD_BREAK_GLASS_REVIEW,
            RecordReviewInput(review=self._review.model_copy(deep=True), action=action),
            result_type=list[str],
            start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
        )
        self._review.escalated_to = escalated

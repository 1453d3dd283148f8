"""AccessRequestWorkflow: one request, from approval through the grant to its revoke.

The run method below is the lifecycle; the messages it answers are in ``workflows/request_messages.py``,
the approval round's rules in ``access/approval.py``, the grant's movable end in ``workflows/deadline.py``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.deadline import Deadline
from workflows.expiry_warning import ExpiryWarning
from workflows.request_messages import RequestMessages
from workflows.request_record import RequestRecord
from workflows.step_timers import StepAlarms

with workflow.unsafe.imports_passed_through():
    from access import limits, names
    from access.approval import ApprovalRound, RoundOutcome, close, planned_steps
    from access.break_glass import BreakGlassReviewInput
    from access.durations import format_duration
    from access.requests import (
        AccessRequestInput,
        ExtensionState,
        GrantInput,
        GrantResult,
        RequestState,
        RequestStatus,
        Resume,
        RevokeInput,
        StepState,
    )
    from access.types import BreakGlassPlan

PROVISION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=8
)
REVOKE_FIRST_TRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=3
)
REVOKE_FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=4), maximum_attempts=0
)
"""A failing revoke is tried every few seconds, for ever: once the target is back, access ends within
seconds (a longer backoff let a revoke land half a minute after a target outage). Retries add nothing
to history; a target that is down gets one cheap call per grant every 4 s."""
TARGET_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
"""The grant and revoke activities heartbeat every second while they wait on a target: an attempt lost
with its worker is retried after this, not after the two-minute start-to-close timeout."""
REVOKE_PERMANENT_PAUSE = timedelta(minutes=5)
"""After a non-retryable revoke failure, wait this long and try again: a revoke never gives up."""

_REQUEST_ENDS: dict[RoundOutcome, RequestState | None] = {
    RoundOutcome.APPROVED: None,
    RoundOutcome.DENIED: RequestState.DENIED,
    RoundOutcome.FAILED: RequestState.FAILED,
}
"""How the request's own round ends the request (an approved one goes on to the grant)."""


async def open_review(status: RequestStatus, plan: BreakGlassPlan) -> None:
    """Start the review of an emergency grant just made (``workflows/break_glass.py``), as a child its request's
    run abandons: the review goes on after the grant ends. Started once per request (a second start finds it
    running and leaves it). By type name: importing the review's module would define it again in every run."""
    assert status.granted_at is not None
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await workflow.start_child_workflow(
            names.BREAK_GLASS_REVIEW_WORKFLOW,
            BreakGlassReviewInput(
                request_id=status.id,
                requester=status.requester,
                role=status.role,
                justification=status.justification,
                plan=plan,
                granted_at=status.granted_at,
                expires_at=status.expires_at,
            ),
            id=names.break_glass_workflow_id(status.id),
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"review of {status.requester}'s emergency access to {status.role}",
        )


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


@workflow.defn
class AccessRequestWorkflow(RequestMessages):
    """Waits for approvals, provisions, holds the grant until it expires or is revoked, revokes.

    The workflow is the source of truth for a request; every state change is written to the
    app DB and the audit log by a local activity and mirrored in search attributes.
    """

    @workflow.init
    def __init__(self, input: AccessRequestInput) -> None:
        self._input = input
        resume = input.resume
        self._status = (
            resume.status
            if resume
            else RequestStatus(
                id=input.id,
                requester=input.requester,
                role=input.role,
                duration=input.duration,
                justification=input.justification,
                policy=input.plan.policy,
                rule=input.plan.rule,
                created_at=input.created_at,
                distinct_approvers=input.plan.distinct_approvers,
                # Data only, no command: histories from before this field replay alike (it is None there).
                reauthenticate_within=input.plan.reauthenticate_within,
                break_glass=input.plan.break_glass,  # data only, like the line above
                steps=planned_steps(input.plan),
            )
        )
        self._record = RequestRecord(
            self._status,
            seq=resume.record_seq if resume else 0,
            recorded_state=resume.status.state if resume else None,
        )
        self._approval = RoundOutcome.APPROVED if resume else None
        self._failure = resume.failure if resume else ""
        self._ending = resume.ending if resume else None
        self._expiring = bool(resume and resume.revoking)
        self._expiry = Deadline(self._status.expires_at)
        self._enforced_end: datetime | None = resume.enforced_end if resume else None
        """The grant's end as last passed to the target, which may enforce it itself."""
        self._never_continue = False
        """A run from before continue-as-new existed, replaying: it never continues as new."""
        self._alarms = StepAlarms(  # the open step's reminders and escalation (the request's round, extensions')
            self._record, requester=input.requester, current_round=self._round, resolve=self._resolve
        )
        self._warning = ExpiryWarning(self._status, self._record, configured=input.expiry_warning)

    # --- the lifecycle ---------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AccessRequestInput) -> RequestStatus:
        if input.resume is not None:
            # A run that continued as new: the grant was made. Hold it, or go straight on revoking it
            # (a revoke taking back a failed provisioning ends the request as failed).
            if not input.resume.revoking:
                await self._hold()
            return await self._revoke_then_end(failed=bool(input.resume.failure))

        await self._open_request()
        ended = await self._await_approval()
        if ended is not None:
            return await self._finish(ended)
        # Cancelled (or its requester left) before anything was granted: end here, granting nothing.
        # Histories from before this check replay without it (no marker).
        if self._ending is not None and workflow.patched("end-before-provision"):
            return await self._finish(RequestState.CANCELLED)
        if not await self._provision():
            # The grant may have reached the target before the failure (a timeout, a crash after the
            # call): take it back, idempotently, before saying the request failed.
            if workflow.patched("compensate-failed-provision"):
                return await self._revoke_then_end(failed=True)
            return await self._finish(RequestState.FAILED)
        if input.plan.break_glass is not None:  # an emergency grant: its review opens now (new plans only)
            await open_review(self._status, input.plan.break_glass)
        await self._hold()
        return await self._revoke_then_end()

    async def _open_request(self) -> None:
        """Record the request, its first step open (or approved, when its rule needs no approval)."""
        input = self._input
        events = [
            self._record.audit(
                input.requester,
                "request.created",
                reason=input.justification,
                rule=input.plan.rule,
                duration=format_duration(input.duration),
            )
        ]
        first = ApprovalRound.request(self._status).start(workflow.now())
        if first is not None:
            events.append(self._record.step_opened(first))
        else:
            events.append(
                self._record.audit("lapse", "request.approved", reason=f"rule {input.plan.rule!r} needs no approval")
            )
        await self._record.write(events)

    async def _await_approval(self) -> RequestState | None:
        """Wait for the request's round to end: None once approved, else the state the request ends in.
        Each step has ``approval_timeout`` to be decided; its reminders and escalation come meanwhile."""
        round = ApprovalRound.request(self._status)
        if not round.steps:
            return None
        while self._approval is None and self._ending is None:
            step = round.open_step
            assert step is not None and step.opened_at is not None
            times_out_at = step.opened_at + self._input.approval_timeout
            alarm = self._alarms.due(before=times_out_at)  # none (every step before them): waits as it always did
            remaining = (alarm.at if alarm is not None else times_out_at) - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda step=step: (
                        self._approval is not None  # type: ignore[misc]
                        or self._ending is not None
                        or step.state is not StepState.OPEN
                    ),
                    timeout=max(remaining, timedelta(0)),
                )
            except TimeoutError:
                if alarm is not None:
                    await self._alarms.ring(alarm)
                    continue
                close(step, StepState.EXPIRED)
                self._failure = (
                    f"no decision on step {step.name!r} within {format_duration(self._input.approval_timeout)}"
                )
                return RequestState.TIMED_OUT
        if self._ending is not None:
            return RequestState.CANCELLED
        assert self._approval is not None
        return _REQUEST_ENDS[self._approval]

    async def _provision(self) -> bool:
        """Grant the role on its target and start the clock; False (why in ``_failure``) if that failed."""
        await self._record.transition(RequestState.PROVISIONING)
        try:
            grant = await self._grant()
        except ActivityError as error:
            self._failure = f"provisioning failed: {_cause(error)}"
            return False
        status = self._status
        status.granted_at = grant.granted_at
        self._set_expiry(grant.granted_at + self._input.duration)
        detail: dict[str, Any] = {
            "account": grant.account,
            "expires_at": self._expiry.at.isoformat(),
            "shared": grant.shared,
        }
        if grant.credentials:
            status.login = grant.account
            detail["credentials"] = True
        self._enforced_end = self._expiry.at
        await self._record.transition(RequestState.ACTIVE, [self._record.audit("lapse", "grant.provisioned", **detail)])
        return True

    async def _hold(self) -> None:
        """Hold the grant until it expires: an extension moves the deadline, a revoke or a leaver's end cuts
        it short, and a history grown long hands the hold to a fresh run."""
        while self._ending is None and not self._expiry.passed():
            # Histories from before this step replay without it: no marker, no activity.
            if self._expiry.at != self._enforced_end and workflow.patched("reprovision-on-extend"):
                await self._move_end()  # then look again: extended again or revoked meanwhile
            elif self._history_is_long():
                await self._continue_as_new(revoking=False)  # returns if an ending came, or never continues
            elif await self._sleep_while_held():
                return

    async def _sleep_while_held(self) -> bool:
        """Sleep toward the grant's end, waking on the way for the expiring-soon warning and an extension's
        reminders and escalation (each only when one is due: none adds nothing). True once the end passed."""
        end = self._expiry.at
        alarm, warning = self._alarms.due(before=end), self._warning.due()
        wake = min((t.at for t in (alarm, warning) if t is not None), default=None)

        def woken() -> bool:  # an extension asked for meanwhile may bring an earlier reminder
            return self._ending is not None or self._history_is_long() or self._alarms.due(before=end) != alarm

        if wake is None:
            return await self._expiry.sleep(unless=woken)
        if wake > workflow.now() and not await self._expiry.sleep(until=wake, unless=woken):
            return False
        if warning is not None and warning.at <= workflow.now():
            await self._warning.give(warning)
        if alarm is not None and alarm.at <= workflow.now():
            await self._alarms.ring(alarm)
        return False

    async def _move_end(self) -> None:
        """After an extension, move the end the target enforces (an ephemeral login's expiry) too."""
        expires_at = self._expiry.at
        try:
            await self._grant(expires_at=expires_at)
        except ActivityError as error:
            # Lapse still holds the grant to the new end; only the target may end logins sooner.
            await self._record.write([self._record.audit("lapse", "grant.extend_failed", reason=_cause(error))])
        self._enforced_end = expires_at

    async def _grant(self, *, expires_at: datetime | None = None) -> GrantResult:
        """Provision the grant; with ``expires_at``, only move the end of one already made."""
        input = self._input
        result: GrantResult = await workflow.execute_activity(
            names.PROVISION_GRANT,
            GrantInput(
                request_id=input.id,
                requester=input.requester,
                role=input.role,
                duration=input.duration,
                expires_at=expires_at,
            ),
            result_type=GrantResult,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=TARGET_HEARTBEAT_TIMEOUT,
            retry_policy=PROVISION_RETRY,
        )
        return result

    async def _revoke_then_end(self, *, failed: bool = False) -> RequestStatus:
        """The grant's time is up or it is being ended: revoke it, then end the request."""
        self._expiring = True
        await self._revoke()
        if failed:
            return await self._finish(RequestState.FAILED)
        return await self._finish(RequestState.REVOKED if self._ending else RequestState.EXPIRED)

    async def _revoke(self) -> None:
        """Revoke until it succeeds. Failures are made visible, never final."""
        retry = REVOKE_FIRST_TRY
        request = RevokeInput(request_id=self._input.id, requester=self._input.requester, role=self._input.role)
        while True:
            try:
                await workflow.execute_activity(
                    names.REVOKE_GRANT,
                    request,
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=TARGET_HEARTBEAT_TIMEOUT,
                    retry_policy=retry,
                )
                return
            except ActivityError as error:
                reason = _cause(error)
                if self._status.revoke_error is None:
                    self._status.revoke_error = reason
                    await self._record.transition(
                        RequestState.REVOKING, [self._record.audit("lapse", "grant.revoke_failing", reason=reason)]
                    )
                retry = REVOKE_FOREVER
                if isinstance(error.cause, ApplicationError) and error.cause.non_retryable:
                    await workflow.sleep(REVOKE_PERMANENT_PAUSE)
                if self._history_is_long():
                    await self._continue_as_new(revoking=True)

    async def _finish(self, state: RequestState) -> RequestStatus:
        """End the request in ``state``: say who ended it and why, record it, answer the last messages."""
        status = self._status
        status.ended_at = workflow.now()
        for extension in status.extensions:
            if extension.state is ExtensionState.PENDING:
                extension.state = ExtensionState.LAPSED
        for step in [*status.steps, *(s for extension in status.extensions for s in extension.steps)]:
            step.next_reminder_at = None  # an ended request reminds nobody
        ending = self._ending
        by, comment = (ending.actor, ending.comment) if ending else ("lapse", "")
        endings = {
            RequestState.EXPIRED: ("lapse", "grant.expired", "its time was up"),
            RequestState.REVOKED: (by, "grant.revoked", comment),
            RequestState.CANCELLED: (by, "request.cancelled", comment),
            RequestState.DENIED: self._denial(),
            RequestState.TIMED_OUT: ("lapse", "request.timed_out", self._failure),
            RequestState.FAILED: ("lapse", "request.failed", self._failure),
        }
        actor, action, reason = endings[state]
        status.ended_by = actor
        status.end_reason = reason
        status.revoke_error = None
        # A denial's own decision event (already carried) is the transition's audit event.
        events = [] if state is RequestState.DENIED else [self._record.audit(actor, action, reason=reason)]
        await self._record.transition(state, events)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return status

    def _denial(self) -> tuple[str, str, str]:
        """Who denied the request, and why: the ending of a denied request."""
        for step in self._status.steps:
            for decision in step.decisions:
                if not decision.approved:
                    return decision.approver, "request.denied", decision.comment
        return "lapse", "request.denied", ""

    # --- continuing as new -----------------------------------------------------------------

    def _history_is_long(self) -> bool:
        """Time to continue as new. Runs from before this (no marker where their history grew long) never
        do: once the patch says so, they are left to run as they always did."""
        if self._never_continue:
            return False
        info = workflow.info()
        # Read at each call, not imported: tests lower the threshold for a run.
        return info.get_current_history_length() >= limits.HISTORY_EVENTS_BEFORE_CONTINUE or (
            info.is_continue_as_new_suggested()
        )

    async def _continue_as_new(self, *, revoking: bool) -> None:
        """Hand the request to a fresh run, so no grant's history grows toward Temporal's limits.

        Returns (without continuing) for a run from before this change, and while holding when a revoke or
        a leaver's end arrives meanwhile: the hold then ends and the revoke goes on in this run.
        """
        if not workflow.patched("continue-as-new"):
            self._never_continue = True
            return
        if revoking:
            await workflow.wait_condition(workflow.all_handlers_finished)
        else:
            # A revoke handler waits for this run to revoke: waiting for it to finish first would deadlock.
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() or self._ending is not None)
            if self._ending is not None:
                return
        resume = Resume(
            status=self._status,
            enforced_end=self._enforced_end,
            ending=self._ending,
            revoking=revoking,
            # Only a revoke taking back a failed provisioning ends as failed (granted_at is set once granted).
            failure=self._failure if revoking and self._status.granted_at is None else "",
            record_seq=self._record.seq,
        )
        workflow.continue_as_new(
            self._input.model_copy(update={"resume": resume}),
            search_attributes=workflow.info().typed_search_attributes,
        )

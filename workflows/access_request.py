"""AccessRequestWorkflow: one request, from approval through the grant to its revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.durations import format_duration
    from access.limits import HISTORY_EVENTS_BEFORE_CONTINUE, MAX_EXTENSIONS, check_text
    from access.requests import (
        AccessRequestInput,
        Decision,
        DecisionInput,
        EndInput,
        ExtendInput,
        ExtensionState,
        ExtensionStatus,
        GrantInput,
        GrantResult,
        RecordInput,
        RequestAck,
        RequestState,
        RequestStatus,
        ResolveInput,
        Resume,
        RevokeInput,
        StepState,
        StepStatus,
    )
    from access.syncs import ReresolveInput
    from access.types import AuditEntry

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


def _refused(kind: str, message: str, *, field: str | None = None) -> ApplicationError:
    """Why an update was rejected; ``kind`` (Forbidden, Conflict, Invalid) maps to an HTTP status and
    ``field``, when given, names the part of the input at fault."""
    return ApplicationError(message, *([field] if field else []), type=kind, non_retryable=True)


def _check_text(field: str, text: str) -> None:
    why = check_text(field, text)
    if why is not None:
        raise _refused("Invalid", why, field=field)


def _approved_by(step: StepStatus, person: str) -> bool:
    return any(d.approver == person and d.approved for d in step.decisions)


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


@workflow.defn
class AccessRequestWorkflow:
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
                steps=[
                    StepStatus(name=s.name, approvers=s.approvers, quorum=s.quorum, eligible=s.eligible)
                    for s in input.plan.steps
                ],
            )
        )
        self._recorded = resume is not None
        self._recorded_state: RequestState | None = resume.status.state if resume else None
        self._record_seq = resume.record_seq if resume else 0
        """Bookkeeping steps so far: the activity writes each one once, even when it is replayed."""
        """The state the app DB last received from this run: updates answer once it holds theirs."""
        self._approval: RequestState | None = RequestState.ACTIVE if resume else None
        """Outcome of the first approval round: approved (ACTIVE), DENIED or FAILED."""
        self._failure = resume.failure if resume else ""
        self._ending: EndInput | None = resume.ending if resume else None
        self._expiring = bool(resume and resume.revoking)
        self._never_continue = False
        """A run from before continue-as-new existed, replaying: it never continues as new."""
        """The grant's time is up: it is being revoked, and can no longer be extended."""
        self._wake = False
        self._carry: list[AuditEntry] = []
        """Audit events of a decision that ended the approval round, recorded by the next transition."""
        self._enforced_end: datetime | None = resume.enforced_end if resume else None
        """The grant's end as last passed to the target, which may enforce it itself."""

    # --- the lifecycle ---------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AccessRequestInput) -> RequestStatus:
        if input.resume is not None:
            return await self._carry_on(input.resume)
        status = self._status
        events = [
            self._audit(
                input.requester,
                "request.created",
                reason=input.justification,
                rule=input.plan.rule,
                duration=format_duration(input.duration),
            )
        ]
        if status.steps:
            events.append(self._open(status.steps[0]))
        else:
            events.append(
                self._audit("lapse", "request.approved", reason=f"rule {input.plan.rule!r} needs no approval")
            )
        await self._record(events)
        self._recorded = True

        if status.steps:
            outcome = await self._await_approval()
            if outcome is not RequestState.ACTIVE:
                return await self._finish(outcome)

        # Cancelled (or its requester left) before anything was granted: end here, granting nothing.
        # Histories from before this check replay without it (no marker).
        if self._ending is not None and workflow.patched("end-before-provision"):
            return await self._finish(RequestState.CANCELLED)
        await self._transition(RequestState.PROVISIONING)
        try:
            grant = await workflow.execute_activity(
                names.PROVISION_GRANT,
                GrantInput(request_id=input.id, requester=input.requester, role=input.role, duration=input.duration),
                result_type=GrantResult,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=TARGET_HEARTBEAT_TIMEOUT,
                retry_policy=PROVISION_RETRY,
            )
        except ActivityError as error:
            self._failure = f"provisioning failed: {_cause(error)}"
            # The grant may have reached the target before the failure (a timeout, a crash after the
            # call): take it back, idempotently, before saying the request failed.
            if workflow.patched("compensate-failed-provision"):
                self._expiring = True
                await self._revoke()
            return await self._finish(RequestState.FAILED)

        status.granted_at = grant.granted_at
        status.expires_at = grant.granted_at + input.duration
        detail: dict[str, Any] = {
            "account": grant.account,
            "expires_at": status.expires_at.isoformat(),
            "shared": grant.shared,
        }
        if grant.credentials:
            status.login = grant.account
            detail["credentials"] = True
        self._enforced_end = status.expires_at
        await self._transition(RequestState.ACTIVE, [self._audit("lapse", "grant.provisioned", **detail)])

        return await self._hold_then_revoke()

    async def _hold_then_revoke(self) -> RequestStatus:
        await self._hold()
        self._expiring = True
        await self._revoke()
        ending = self._ending
        return await self._finish(RequestState.REVOKED if ending else RequestState.EXPIRED)

    async def _carry_on(self, resume: Resume) -> RequestStatus:
        """A run that continued as new: the grant was made; hold it, or go straight on revoking it."""
        if resume.revoking:
            await self._revoke()
            if resume.failure:
                return await self._finish(RequestState.FAILED)
            return await self._finish(RequestState.REVOKED if self._ending else RequestState.EXPIRED)
        return await self._hold_then_revoke()

    def _history_is_long(self) -> bool:
        """Time to continue as new. Runs from before this (no marker where their history grew long) never
        do: once the patch says so, they are left to run as they always did."""
        if self._never_continue:
            return False
        info = workflow.info()
        return info.get_current_history_length() >= HISTORY_EVENTS_BEFORE_CONTINUE or (
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
            record_seq=self._record_seq,
        )
        workflow.continue_as_new(
            self._input.model_copy(update={"resume": resume}),
            search_attributes=workflow.info().typed_search_attributes,
        )

    async def _await_approval(self) -> RequestState:
        """Wait for the approval round to end; each step has ``approval_timeout`` to be decided."""
        while self._approval is None and self._ending is None:
            step = next(s for s in self._status.steps if s.state is StepState.OPEN)
            assert step.opened_at is not None
            remaining = step.opened_at + self._input.approval_timeout - workflow.now()
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
                step.state = StepState.EXPIRED
                self._failure = (
                    f"no decision on step {step.name!r} within {format_duration(self._input.approval_timeout)}"
                )
                return RequestState.TIMED_OUT
        if self._ending is not None:
            return RequestState.CANCELLED
        assert self._approval is not None
        return self._approval

    async def _hold(self) -> None:
        """Sleep until the grant expires; revoke and extensions wake it early."""
        while self._ending is None:
            assert self._status.expires_at is not None
            remaining = self._status.expires_at - workflow.now()
            if remaining <= timedelta(0):
                return
            # Histories from before this step replay without it: no marker, no activity.
            if self._status.expires_at != self._enforced_end and workflow.patched("reprovision-on-extend"):
                await self._move_end()
                continue  # the grant may have been extended again or revoked meanwhile
            if self._history_is_long():
                await self._continue_as_new(revoking=False)
                continue  # an ending arrived, or this run never continues as new
            self._wake = False
            try:
                await workflow.wait_condition(
                    lambda: self._wake or self._ending is not None or self._history_is_long(), timeout=remaining
                )
            except TimeoutError:
                return

    async def _move_end(self) -> None:
        """After an extension, move the end the target enforces (an ephemeral login's expiry) too."""
        expires_at = self._status.expires_at
        try:
            await workflow.execute_activity(
                names.PROVISION_GRANT,
                GrantInput(
                    request_id=self._input.id,
                    requester=self._input.requester,
                    role=self._input.role,
                    duration=self._input.duration,
                    expires_at=expires_at,
                ),
                result_type=GrantResult,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=TARGET_HEARTBEAT_TIMEOUT,
                retry_policy=PROVISION_RETRY,
            )
        except ActivityError as error:
            # Lapse still holds the grant to the new end; only the target may end logins sooner.
            await self._record([self._audit("lapse", "grant.extend_failed", reason=_cause(error))])
        self._enforced_end = expires_at

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
                    await self._transition(
                        RequestState.REVOKING, [self._audit("lapse", "grant.revoke_failing", reason=reason)]
                    )
                retry = REVOKE_FOREVER
                if isinstance(error.cause, ApplicationError) and error.cause.non_retryable:
                    await workflow.sleep(REVOKE_PERMANENT_PAUSE)
                if self._history_is_long():
                    await self._continue_as_new(revoking=True)

    async def _finish(self, state: RequestState) -> RequestStatus:
        status = self._status
        status.ended_at = workflow.now()
        for extension in status.extensions:
            if extension.state is ExtensionState.PENDING:
                extension.state = ExtensionState.LAPSED
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
        events = [] if state is RequestState.DENIED else [self._audit(actor, action, reason=reason)]
        await self._transition(state, events)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return status

    # --- messages --------------------------------------------------------------------------

    @workflow.update
    async def submit(self) -> RequestStatus:
        """Sent with the start (update-with-start): returns once the request is recorded."""
        await workflow.wait_condition(lambda: self._recorded)
        return self._status

    @workflow.query
    def status(self) -> RequestStatus:
        return self._status

    @workflow.update
    async def approve(self, input: DecisionInput) -> RequestAck:
        await self._decide(input, approved=True)
        return self._ack()

    @approve.validator
    def _validate_approve(self, input: DecisionInput) -> None:
        self._check_addressed(input.request_id)
        self._check_decision(input, strict=True, distinct=True)

    @workflow.update
    async def deny(self, input: DecisionInput) -> RequestAck:
        await self._decide(input, approved=False)
        return self._ack()

    @deny.validator
    def _validate_deny(self, input: DecisionInput) -> None:
        self._check_addressed(input.request_id)
        self._check_decision(input, strict=True, distinct=True)

    @workflow.update
    async def cancel(self, input: EndInput) -> RequestAck:
        self._check_cancel(input)
        self._ending = input
        await self._ended_or_revoking()
        return self._ack()

    @cancel.validator
    def _validate_cancel(self, input: EndInput) -> None:
        self._check_addressed(input.request_id)
        self._check_cancel(input, strict=True)

    @workflow.update
    async def revoke(self, input: EndInput) -> RequestAck:
        self._check_revoke(input)
        self._ending = input
        await self._ended_or_revoking()
        return self._ack()

    @revoke.validator
    def _validate_revoke(self, input: EndInput) -> None:
        self._check_addressed(input.request_id)
        self._check_revoke(input, strict=True)

    @workflow.update
    async def extend(self, input: ExtendInput) -> RequestAck:
        self._check_extend(input, strict=workflow.patched("extension-limits"))
        status = self._status
        extension = ExtensionStatus(
            duration=input.duration,
            justification=input.justification,
            requested_at=workflow.now(),
            rule=input.plan.rule,
            steps=[
                StepStatus(name=s.name, approvers=s.approvers, quorum=s.quorum, eligible=s.eligible)
                for s in input.plan.steps
            ],
        )
        status.extensions.append(extension)
        events = [
            self._audit(
                input.actor, "extension.requested", reason=input.justification, duration=format_duration(input.duration)
            )
        ]
        if extension.steps:
            events.append(self._open(extension.steps[0]))
            await self._record(events)
        else:
            events.append(self._apply_extension(extension, f"rule {input.plan.rule!r} needs no approval"))
            await self._transition(status.state, events)
        return self._ack()

    @extend.validator
    def _validate_extend(self, input: ExtendInput) -> None:
        self._check_addressed(input.request_id)
        self._check_extend(input, strict=True)

    def _ack(self) -> RequestAck:
        return RequestAck(id=self._input.id, state=self._status.state, expires_at=self._status.expires_at)

    async def _ended_or_revoking(self) -> None:
        """Answer a revoke or cancel once it is done, or once the revoke is known to be failing (it goes
        on until it succeeds, shown as ``revoking``): the caller is not held while a target is down.
        Histories from before this answered only at the end."""
        if workflow.patched("answer-while-revoking"):
            await workflow.wait_condition(
                lambda: (
                    (self._status.state.ended or self._status.state is RequestState.REVOKING)
                    and self._recorded_state is self._status.state
                )
            )
        else:
            await workflow.wait_condition(lambda: self._status.state.ended)

    # --- the directory sync (signals: old histories never received them) -------------------

    @workflow.signal
    def end_for_leaver(self, input: EndInput) -> None:
        """The requester left the organisation: a pending request is cancelled, a granted one revoked.

        Anything else (already ending, ended, decided but not yet granted) is left to run its course.
        """
        if self._ending is not None:
            return
        state = self._status.state
        undecided = state is RequestState.PENDING and self._approval in (None, RequestState.ACTIVE)
        if undecided or state in (RequestState.PROVISIONING, RequestState.ACTIVE):
            self._ending = input

    @workflow.signal
    async def reresolve_approvers(self, input: ReresolveInput) -> None:
        """Approvers of the open step left: resolve them again, keeping decisions of those still eligible.

        If too few remain for the approvals still needed, the request fails (an extension is refused),
        saying who left.
        """
        steps = self._round()
        step = next((s for s in steps or [] if s.state is StepState.OPEN), None)
        if step is None:
            return
        try:
            eligible: list[str] = await workflow.execute_local_activity(
                names.RESOLVE_APPROVERS,
                ResolveInput(requester=self._input.requester, role=self._input.role, approvers=step.approvers),
                result_type=list[str],
                start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
            )
        except ActivityError:
            return  # the next directory sync asks again
        if self._round() is not steps or step.state is not StepState.OPEN or step.approvals >= step.quorum:
            return  # decided or ended meanwhile
        gone = [person for person in step.eligible if person not in eligible]
        if not gone and sorted(eligible) == sorted(step.eligible):
            return
        dropped = [d.approver for d in step.decisions if d.approver not in eligible]
        step.decisions = [d for d in step.decisions if d.approver in eligible]
        step.eligible = eligible
        needed = step.quorum - step.approvals
        available = [p for p in self._free_approvers(steps or [], step) if all(d.approver != p for d in step.decisions)]
        events = [
            self._audit("lapse", "step.reresolved", step=step.name, eligible=eligible, gone=gone, dropped=dropped)
        ]
        if len(available) >= needed:
            await self._record(events)
            return
        left = [p for p in gone if p in input.left]
        moved = [p for p in gone if p not in input.left]
        who = "; ".join(
            part
            for part in (
                f"{', '.join(left)} left" if left else "",
                f"{', '.join(moved)} no longer eligible" if moved else "",
            )
            if part
        )
        remain = (
            "no eligible approver remains" if not available else f"only {len(available)} eligible approver(s) remain"
        )
        why = f"step {step.name!r} needs {needed} approval{'' if needed == 1 else 's'} but {remain}" + (
            f": {who}" if who else ""
        )
        if steps is self._status.steps:
            # The round is over: the run's next transition ends the request as failed and records these.
            self._failure = why
            self._carry.extend(events)
            self._approval = RequestState.FAILED
            return
        extension = self._status.extensions[-1]
        extension.state = ExtensionState.DENIED
        events.append(self._audit("lapse", "extension.refused", reason=why))
        await self._record(events)

    # --- validation (validators reject without a trace in history; the API audits that) ---

    def _round(self) -> list[StepStatus] | None:
        """The steps open to decisions: none once the request is ending or its round is over."""
        if self._ending is not None:
            return None
        if self._status.state is RequestState.PENDING and self._approval is not None:
            return None
        return self._status.open_round()

    def _check_decision(self, input: DecisionInput, *, strict: bool, distinct: bool) -> None:
        """Whether ``input.actor`` may decide the open step now. ``strict`` adds bounded comments, and
        ``distinct`` one person's decision counting for one step of a round only: rules that came later."""
        steps = self._round()
        step = next((s for s in steps or [] if s.state is StepState.OPEN), None)
        if step is None:
            raise _refused(
                "Conflict", f"request {self._input.id} is {self._status.state.value}: nothing is awaiting a decision"
            )
        if strict:
            _check_text("comment", input.comment)
        if input.actor == self._input.requester:
            raise _refused("Forbidden", "you cannot decide your own request")
        if input.actor not in step.eligible:
            # Who is eligible is not said: the refusal goes to someone who may not see the request.
            raise _refused("Forbidden", f"{input.actor} is not an eligible approver for step {step.name!r}")
        if any(d.approver == input.actor for d in step.decisions):
            raise _refused("Conflict", f"{input.actor} has already decided step {step.name!r}")
        if step.approvals >= step.quorum:
            raise _refused("Conflict", f"step {step.name!r} already has the approvals it needs")
        if distinct and self._input.plan.distinct_approvers:
            earlier = next((s for s in steps or [] if s is not step and _approved_by(s, input.actor)), None)
            if earlier is not None:
                raise _refused(
                    "Forbidden",
                    f"{input.actor} already approved step {earlier.name!r} of this request; "
                    f"step {step.name!r} needs someone else",
                )

    def _check_addressed(self, request_id: str | None) -> None:
        """Refuse a message made for another request: payloads are sealed, but a sealed one could be
        replayed into another run by someone with access to Temporal. Validators only: they do not run on
        replay, where messages from before this check carry no request id."""
        if request_id != self._input.id:
            raise _refused("Forbidden", f"this was sent for request {request_id or '(none)'}, not {self._input.id}")

    def _check_cancel(self, input: EndInput, *, strict: bool = False) -> None:
        if strict:
            _check_text("comment", input.comment)
        if input.actor != self._input.requester and not input.is_admin:
            raise _refused("Forbidden", "only the requester or an admin can cancel a request")
        if self._status.state is not RequestState.PENDING or self._ending is not None:
            raise _refused(
                "Conflict",
                f"request {self._input.id} is {self._status.state.value}: only a pending request can be cancelled",
            )

    def _check_revoke(self, input: EndInput, *, strict: bool = False) -> None:
        if strict:
            _check_text("comment", input.comment)
        if input.actor != self._input.requester and not input.is_admin:
            raise _refused("Forbidden", "only the requester or an admin can revoke a grant")
        if self._status.state not in (RequestState.PROVISIONING, RequestState.ACTIVE) or self._ending is not None:
            raise _refused(
                "Conflict",
                f"request {self._input.id} is {self._status.state.value}: only a granted request can be revoked",
            )

    def _check_extend(self, input: ExtendInput, *, strict: bool) -> None:
        """Whether the grant may be extended so. ``strict`` adds the rules that came later: bounded
        justifications and extension counts, no extension once the time is up, and the policy's verdict
        only for the total it was judged for."""
        status = self._status
        if strict:
            _check_text("justification", input.justification)
        if input.actor != self._input.requester:
            raise _refused("Forbidden", "only the requester can extend their grant")
        if status.state is not RequestState.ACTIVE or self._ending is not None or (strict and self._expiring):
            state = "expiring" if self._expiring else status.state.value
            raise _refused("Conflict", f"request {self._input.id} is {state}: only an active grant can be extended")
        if status.extensions and status.extensions[-1].state is ExtensionState.PENDING:
            raise _refused("Conflict", "an extension of this grant is already awaiting approval")
        if strict and len(status.extensions) >= MAX_EXTENSIONS:
            raise _refused(
                "Conflict",
                f"request {self._input.id} has asked for {len(status.extensions)} extensions, the most one "
                "request may; request the role again instead",
            )
        if input.duration <= timedelta(0):
            raise _refused("Invalid", "the extension must be longer than zero", field="duration")
        assert status.granted_at is not None and status.expires_at is not None
        total = status.expires_at + input.duration - status.granted_at
        if strict and input.total is not None and input.total != total:
            raise _refused(
                "Conflict",
                f"the grant changed while the extension was being judged (it would be {format_duration(total)} "
                f"long, not {format_duration(input.total)}); ask again",
            )
        if total > input.plan.max_duration:
            raise _refused(
                "Invalid",
                f"extending by {format_duration(input.duration)} makes the grant {format_duration(total)} long, "
                f"beyond the {format_duration(input.plan.max_duration)} rule {input.plan.rule!r} allows",
                field="duration",
            )

    # --- decisions -------------------------------------------------------------------------

    async def _decide(self, input: DecisionInput, *, approved: bool) -> None:
        # Again: another update may have run since validation. Histories from before the distinct-approver
        # rule replay without it (validators do not run on replay, this check does); a round of one step
        # has nothing to check, and its history no marker.
        multi_step = len(self._round() or []) > 1
        self._check_decision(input, strict=False, distinct=multi_step and workflow.patched("distinct-approvers"))
        steps = self._round()
        assert steps is not None
        index, step = next((i, s) for i, s in enumerate(steps) if s.state is StepState.OPEN)
        step.decisions.append(
            Decision(approver=input.actor, approved=approved, comment=input.comment, at=workflow.now())
        )
        is_extension = steps is not self._status.steps
        kind = "extension" if is_extension else "request"
        events = [
            self._audit(
                input.actor,
                f"{kind}.{'approved' if approved else 'denied'}",
                reason=input.comment,
                step=step.name,
                approvals=f"{step.approvals}/{step.quorum}",
            )
        ]
        outcome: RequestState | None = None
        if not approved:
            step.state = StepState.DENIED
            outcome = RequestState.DENIED
        elif step.approvals >= step.quorum:
            if index + 1 == len(steps):
                step.state = StepState.APPROVED
                outcome = RequestState.ACTIVE
            else:
                # Resolve before changing any state, so no moment has no open step.
                following = steps[index + 1]
                following.eligible = await workflow.execute_local_activity(
                    names.RESOLVE_APPROVERS,
                    ResolveInput(requester=self._input.requester, role=self._input.role, approvers=following.approvers),
                    result_type=list[str],
                    start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
                )
                step.state = StepState.APPROVED
                free = self._free_approvers(steps, following)
                if len(free) < following.quorum:
                    self._failure = (
                        f"step {following.name!r} needs {following.quorum} approval(s) "
                        f"but only {len(free)} eligible approver(s) remain"
                    )
                    outcome = RequestState.FAILED
                else:
                    events.append(self._open(following))

        if is_extension:
            extension = self._status.extensions[-1]
            if outcome is RequestState.ACTIVE:
                events.append(self._apply_extension(extension, "approved"))
                await self._transition(self._status.state, events)
                return
            if outcome is not None:
                extension.state = ExtensionState.DENIED
                events.append(self._audit("lapse", "extension.refused", reason=self._failure or "denied"))
        elif outcome is not None:
            # The round is over: the run's next transition records these with its own state.
            if outcome is RequestState.ACTIVE:
                events.append(self._audit("lapse", "request.approved", reason="all steps approved"))
            self._carry.extend(events)
            self._approval = outcome
            # Answer once the app DB holds the state the decision led to (provisioning, denied, failed), so
            # the API can read it there; histories from before answered once the state changed.
            if workflow.patched("answer-after-record"):
                await workflow.wait_condition(
                    lambda: (
                        self._status.state is not RequestState.PENDING and self._recorded_state is self._status.state
                    )
                )
            else:
                await workflow.wait_condition(lambda: self._status.state is not RequestState.PENDING)
            return
        await self._record(events)

    def _free_approvers(self, steps: list[StepStatus], step: StepStatus) -> list[str]:
        """Who may still decide ``step``: its eligible people, less those who approved another step of the
        round when one person counts for one step (histories from before that rule count everyone)."""
        if not (self._input.plan.distinct_approvers and workflow.patched("distinct-approvers")):
            return list(step.eligible)
        return [p for p in step.eligible if not any(s is not step and _approved_by(s, p) for s in steps)]

    def _apply_extension(self, extension: ExtensionStatus, reason: str) -> AuditEntry:
        assert self._status.expires_at is not None
        extension.state = ExtensionState.APPROVED
        self._status.expires_at += extension.duration
        self._wake = True
        return self._audit("lapse", "grant.extended", reason=reason, expires_at=self._status.expires_at.isoformat())

    def _denial(self) -> tuple[str, str, str]:
        """Who denied the request, and why: the ending of a denied request."""
        for step in self._status.steps:
            for decision in step.decisions:
                if not decision.approved:
                    return decision.approver, "request.denied", decision.comment
        return "lapse", "request.denied", ""

    # --- bookkeeping -----------------------------------------------------------------------

    def _open(self, step: StepStatus) -> AuditEntry:
        step.state = StepState.OPEN
        step.opened_at = workflow.now()
        return self._audit("lapse", "step.opened", step=step.name, eligible=step.eligible, quorum=step.quorum)

    def _audit(self, actor: str, action: str, *, reason: str = "", **details: object) -> AuditEntry:
        return AuditEntry(
            actor=actor,
            action=action,
            target=names.request_workflow_id(self._input.id),
            reason=reason,
            details={"role": self._input.role, **details},
            at=workflow.now(),
        )

    async def _record(self, events: list[AuditEntry]) -> None:
        events, self._carry = self._carry + events, []
        snapshot = self._status.model_copy(deep=True)
        self._record_seq += 1
        await workflow.execute_local_activity(
            names.RECORD_REQUEST,
            RecordInput(status=snapshot, events=events, seq=self._record_seq),
            start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
        )
        self._recorded_state = snapshot.state

    async def _transition(self, state: RequestState, events: list[AuditEntry] | None = None) -> None:
        """Enter ``state``: mirror it in search attributes, then record status and audit."""
        self._status.state = state
        updates: list[SearchAttributeUpdate[Any]] = [names.STATE.value_set(state.value)]
        if self._status.expires_at is not None:
            updates.append(names.EXPIRES_AT.value_set(self._status.expires_at))
        workflow.upsert_search_attributes(updates)
        await self._record(events or [])

"""The messages a request's workflow answers: decisions, cancel, revoke, extend and the directory's signals.

:class:`RequestMessages` is the base of ``AccessRequestWorkflow`` (``workflows/access_request.py``), which
holds the lifecycle and sets up the state declared here. Handlers change that state and write the record;
the run reacts. The rules of the approval round are in ``access/approval.py``, the refusals in
``workflows/request_checks.py``.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.deadline import Deadline
from workflows.request_checks import check_addressed, check_cancel, check_decision, check_extend, check_revoke
from workflows.request_record import RequestRecord

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.approval import ApprovalRound, RoundKind, RoundOutcome, deciders, planned_steps
    from access.durations import format_duration
    from access.requests import (
        AccessRequestInput,
        Decision,
        DecisionInput,
        EndInput,
        ExtendInput,
        ExtensionState,
        ExtensionStatus,
        RequestAck,
        RequestState,
        RequestStatus,
        ResolveInput,
    )
    from access.syncs import ReresolveInput
    from access.types import Approver, AuditEntry


class RequestMessages:
    """Updates, signals and the query of a request's workflow, with the decisions they make."""

    # Set up by AccessRequestWorkflow.__init__.
    _input: AccessRequestInput
    _status: RequestStatus
    _record: RequestRecord
    _approval: RoundOutcome | None
    """How the request's own round ended."""
    _failure: str
    """Why the request failed or timed out (also the reason of the last failed round)."""
    _ending: EndInput | None
    """A cancel, a revoke or a leaver's end, once asked for."""
    _expiring: bool
    """The grant's time is up: it is being revoked, and can no longer be extended."""
    _expiry: Deadline
    """When the grant ends; extensions move it (``_status.expires_at`` follows it)."""

    @workflow.update
    async def submit(self) -> RequestStatus:
        """Sent with the start (update-with-start): returns once the request is recorded."""
        await workflow.wait_condition(lambda: self._record.recorded_state is not None)
        return self._status

    @workflow.query
    def status(self) -> RequestStatus:
        return self._status

    # --- decisions -------------------------------------------------------------------------

    @workflow.update
    async def approve(self, input: DecisionInput) -> RequestAck:
        await self._decide(input, approved=True)
        return self._ack()

    @approve.validator
    def _validate_approve(self, input: DecisionInput) -> None:
        check_addressed(self._status, input.request_id)
        self._check_decision(input, strict=True, distinct=True)

    @workflow.update
    async def deny(self, input: DecisionInput) -> RequestAck:
        await self._decide(input, approved=False)
        return self._ack()

    @deny.validator
    def _validate_deny(self, input: DecisionInput) -> None:
        check_addressed(self._status, input.request_id)
        self._check_decision(input, strict=True, distinct=True)

    def _round(self) -> ApprovalRound | None:
        """The round open to decisions: none once the request is ending or its own round is over."""
        if self._ending is not None:
            return None
        if self._status.state is RequestState.PENDING and self._approval is not None:
            return None
        return ApprovalRound.of(self._status)

    def _check_decision(self, input: DecisionInput, *, strict: bool, distinct: bool) -> None:
        distinct = distinct and self._input.plan.distinct_approvers
        check_decision(self._status, self._round(), input, strict=strict, distinct=distinct)

    def _distinct_approvers(self) -> bool:
        """Whether one person's approval counts for one step of a round only (histories from before that
        rule count everyone)."""
        return self._input.plan.distinct_approvers and workflow.patched("distinct-approvers")

    async def _decide(self, input: DecisionInput, *, approved: bool) -> None:
        # Again: another update may have run since validation. Histories from before the distinct-approver
        # rule replay without it (validators do not run on replay, this check does); a round of one step
        # has nothing to check, and its history no marker.
        round = self._round()
        multi_step = round is not None and len(round.steps) > 1
        self._check_decision(input, strict=False, distinct=multi_step and workflow.patched("distinct-approvers"))
        assert round is not None
        decided = round.decide(
            Decision(approver=input.actor, approved=approved, comment=input.comment, at=workflow.now())
        )
        step = decided.step
        events = [
            self._record.audit(
                input.actor,
                f"{round.kind.value}.{'approved' if approved else 'denied'}",
                reason=input.comment,
                step=step.name,
                approvals=f"{step.approvals}/{step.quorum}",
            )
        ]
        outcome = decided.outcome
        if decided.following is not None:
            eligible = await self._resolve(decided.following.approvers)
            failure = round.open_following(decided, eligible, distinct=self._distinct_approvers(), at=workflow.now())
            if failure is None:
                events.append(self._record.step_opened(decided.following))
            else:
                self._failure = failure
                outcome = RoundOutcome.FAILED

        if outcome is None:
            await self._record.write(events)
        elif round.kind is RoundKind.EXTENSION:
            await self._end_extension_round(round, outcome, events, reason=self._failure or "denied")
        else:
            self._end_request_round(outcome, events)
            # Answer once the app DB holds the state the decision led to (provisioning, denied, failed), so
            # the API can read it there; histories from before answered once the state changed.
            if workflow.patched("answer-after-record"):
                await workflow.wait_condition(
                    lambda: (
                        self._status.state is not RequestState.PENDING
                        and self._record.recorded_state is self._status.state
                    )
                )
            else:
                await workflow.wait_condition(lambda: self._status.state is not RequestState.PENDING)

    def _end_request_round(self, outcome: RoundOutcome, events: list[AuditEntry]) -> None:
        """The request's round is over: the run's next transition records ``events`` with its own state."""
        if outcome is RoundOutcome.APPROVED:
            events.append(self._record.audit("lapse", "request.approved", reason="all steps approved"))
        self._record.carry(events)
        self._approval = outcome

    async def _end_extension_round(
        self, round: ApprovalRound, outcome: RoundOutcome, events: list[AuditEntry], *, reason: str
    ) -> None:
        """An extension's round is over: move the grant's end, or refuse the extension saying why."""
        assert round.extension is not None
        extension = self._status.extensions[round.extension]
        if outcome is RoundOutcome.APPROVED:
            events.append(self._apply_extension(extension, "approved"))
            await self._record.transition(self._status.state, events)
            return
        extension.state = ExtensionState.DENIED
        events.append(self._record.audit("lapse", "extension.refused", reason=reason))
        await self._record.write(events)

    async def _resolve(self, approvers: list[Approver]) -> list[str]:
        """Who ``approvers`` (a step's) are now, as the directory says (a local activity)."""
        eligible: list[str] = await workflow.execute_local_activity(
            names.RESOLVE_APPROVERS,
            ResolveInput(requester=self._input.requester, role=self._input.role, approvers=approvers),
            result_type=list[str],
            start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
        )
        return eligible

    # --- ending and extending --------------------------------------------------------------

    @workflow.update
    async def cancel(self, input: EndInput) -> RequestAck:
        check_cancel(self._status, input, ending=self._ending)
        self._ending = input
        await self._ended_or_revoking()
        return self._ack()

    @cancel.validator
    def _validate_cancel(self, input: EndInput) -> None:
        check_addressed(self._status, input.request_id)
        check_cancel(self._status, input, ending=self._ending, strict=True)

    @workflow.update
    async def revoke(self, input: EndInput) -> RequestAck:
        check_revoke(self._status, input, ending=self._ending)
        self._ending = input
        await self._ended_or_revoking()
        return self._ack()

    @revoke.validator
    def _validate_revoke(self, input: EndInput) -> None:
        check_addressed(self._status, input.request_id)
        check_revoke(self._status, input, ending=self._ending, strict=True)

    async def _ended_or_revoking(self) -> None:
        """Answer a revoke or cancel once it is done, or once the revoke is known to be failing (it goes
        on until it succeeds, shown as ``revoking``): the caller is not held while a target is down.
        Histories from before this answered only at the end."""
        if workflow.patched("answer-while-revoking"):
            await workflow.wait_condition(
                lambda: (
                    (self._status.state.ended or self._status.state is RequestState.REVOKING)
                    and self._record.recorded_state is self._status.state
                )
            )
        else:
            await workflow.wait_condition(lambda: self._status.state.ended)

    @workflow.update
    async def extend(self, input: ExtendInput) -> RequestAck:
        strict = workflow.patched("extension-limits")
        check_extend(self._status, input, ending=self._ending, expiring=self._expiring, strict=strict)
        extension = ExtensionStatus(
            duration=input.duration,
            justification=input.justification,
            requested_at=workflow.now(),
            rule=input.plan.rule,
            steps=planned_steps(input.plan),
        )
        self._status.extensions.append(extension)
        events = [
            self._record.audit(
                input.actor, "extension.requested", reason=input.justification, duration=format_duration(input.duration)
            )
        ]
        round = ApprovalRound.of(self._status)
        assert round is not None and round.kind is RoundKind.EXTENSION
        first = round.start(workflow.now())
        if first is not None:
            events.append(self._record.step_opened(first))
            await self._record.write(events)
        else:
            events.append(self._apply_extension(extension, f"rule {input.plan.rule!r} needs no approval"))
            await self._record.transition(self._status.state, events)
        return self._ack()

    @extend.validator
    def _validate_extend(self, input: ExtendInput) -> None:
        check_addressed(self._status, input.request_id)
        check_extend(self._status, input, ending=self._ending, expiring=self._expiring, strict=True)

    def _apply_extension(self, extension: ExtensionStatus, reason: str) -> AuditEntry:
        extension.state = ExtensionState.APPROVED
        self._set_expiry(self._expiry.at + extension.duration)
        return self._record.audit("lapse", "grant.extended", reason=reason, expires_at=self._expiry.at.isoformat())

    def _set_expiry(self, at: datetime) -> None:
        self._status.expires_at = at
        self._expiry.move(at)

    def _ack(self) -> RequestAck:
        return RequestAck(id=self._input.id, state=self._status.state, expires_at=self._status.expires_at)

    # --- the directory sync (signals: old histories never received them) -------------------

    @workflow.signal
    def end_for_leaver(self, input: EndInput) -> None:
        """The requester left the organisation: a pending request is cancelled, a granted one revoked.

        Anything else (already ending, ended, decided but not yet granted) is left to run its course.
        """
        if self._ending is not None:
            return
        state = self._status.state
        undecided = state is RequestState.PENDING and self._approval in (None, RoundOutcome.APPROVED)
        if undecided or state in (RequestState.PROVISIONING, RequestState.ACTIVE):
            self._ending = input

    @workflow.signal
    async def reresolve_approvers(self, input: ReresolveInput) -> None:
        """Approvers of the open step left: resolve them again, keeping decisions of those still eligible.

        If too few remain for the approvals still needed, the request fails (an extension is refused),
        saying who left.
        """
        round = self._round()
        step = round.open_step if round else None
        if round is None or step is None:
            return
        try:
            eligible = await self._resolve(deciders(step))  # those it escalated to stay, while eligible
        except ActivityError:
            return  # the next directory sync asks again
        if not round.is_same(self._round()) or not round.reresolves(step, eligible):
            return  # decided or ended meanwhile, or nobody changed
        changed = round.reresolve(step, eligible, left=input.left, distinct=self._distinct_approvers())
        events = [
            self._record.audit(
                "lapse",
                "step.reresolved",
                step=step.name,
                eligible=eligible,
                gone=changed.gone,
                dropped=changed.dropped,
            )
        ]
        if changed.failure is None:
            await self._record.write(events)
        elif round.kind is RoundKind.REQUEST:
            self._failure = changed.failure
            self._end_request_round(RoundOutcome.FAILED, events)
        else:
            await self._end_extension_round(round, RoundOutcome.FAILED, events, reason=changed.failure)

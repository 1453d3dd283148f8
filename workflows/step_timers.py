"""Reminders and escalation of a request's open approval step, rung by the request's run.

The run waits for the earliest of a decision, the open step's next reminder, its escalation and (for the
request's own round) its timeout; :meth:`StepAlarms.due` says when the next reminder or escalation is, and
:meth:`StepAlarms.ring` sends it. Their rules are plain code in ``access.approval`` (``next_timer``,
``remind``, ``escalate``). A step whose plan asks for neither adds no command to the history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.request_record import RequestRecord

with workflow.unsafe.imports_passed_through():
    from access.approval import ApprovalRound, StepTimer, TimerKind, escalate, next_timer, remind
    from access.durations import format_duration
    from access.types import Approver

RESOLVE_AGAIN = timedelta(minutes=5)
"""An escalation whose approvers could not be looked up is tried again this much later."""


class StepAlarms:
    """The open step's reminders and escalation: when the next is due, and sending it when it is.

    ``current_round`` is the round open to decisions now (the request's own, or a pending extension's);
    ``resolve`` looks approvers up as the directory says now (the ``resolve_approvers`` local activity).
    """

    def __init__(
        self,
        record: RequestRecord,
        *,
        requester: str,
        current_round: Callable[[], ApprovalRound | None],
        resolve: Callable[[list[Approver]], Awaitable[list[str]]],
    ) -> None:
        self._record = record
        self._requester = requester
        self._current_round = current_round
        self._resolve = resolve

    def due(self, *, before: datetime) -> StepTimer | None:
        """The open step's next reminder or escalation, if it has one ``before`` (its timeout, the grant's end).
        Pure: usable in a wait's condition."""
        round = self._current_round()
        timer = next_timer(round.open_step) if round is not None else None
        return timer if timer is not None and timer.at < before else None

    async def ring(self, timer: StepTimer) -> None:
        """Send the reminder or escalation ``timer`` says, if it is still the one due (a decision may have
        closed the step meanwhile)."""
        round = self._current_round()
        step = round.open_step if round is not None else None
        if round is None or step is None or next_timer(step) != timer:
            return
        record = self._record
        if timer.kind is TimerKind.REMINDER:
            number = remind(step, workflow.now())
            await record.write([record.audit("lapse", "step.reminded", step=step.name, reminder=number)])
            return
        try:
            people = await self._resolve(step.escalate_to)
        except ActivityError:
            # The directory could not be read: try again shortly, rather than escalate to nobody.
            if next_timer(step) == timer:
                step.escalate_at = workflow.now() + RESOLVE_AGAIN
            return
        if not round.is_same(self._current_round()) or next_timer(step) != timer:
            return  # decided or ended while the approvers were looked up
        added = escalate(step, people, requester=self._requester, at=workflow.now())
        await record.write(
            [
                record.audit(
                    "lapse",
                    "step.escalated",
                    reason=f"undecided after {format_duration(step.escalate_after)}" if step.escalate_after else "",
                    step=step.name,
                    added=added,
                    # Whom this event asks to decide (as ``step.opened``'s): the outbox tells them, not those
                    # the step named before, who were asked already.
                    eligible=added,
                )
            ]
        )

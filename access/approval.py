"""The approval round: steps decided in order, each by a quorum of its eligible people; plain code, no Temporal.

A request has one round of its own, decided while it is pending; each extension of its grant has another,
decided while the grant is active. :class:`ApprovalRound` is a view over one round's steps (which live in
the request's :class:`~access.requests.RequestStatus`): it says who may decide, applies decisions, and
says when the round is over. The workflow does the waiting, the directory look-ups and the audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from access.errors import Refusal, RefusalKind
from access.limits import MAX_REMINDERS
from access.requests import Decision, ExtensionState, RequestState, RequestStatus, StepState, StepStatus
from access.types import Approver, RequestPlan


class RoundKind(StrEnum):
    """Whose round it is; the value prefixes the round's audit actions (``request.approved``)."""

    REQUEST = "request"
    """The request's own steps, decided while it is pending."""
    EXTENSION = "extension"
    """A pending extension's steps, decided while the grant is active."""


class RoundOutcome(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"
    FAILED = "failed"
    """Too few people remain free to give a step the approvals it needs."""


@dataclass(frozen=True)
class Decided:
    """What one decision did to its round."""

    step: StepStatus
    """The step decided."""
    outcome: RoundOutcome | None = None
    """Set when the decision ended the round."""
    following: StepStatus | None = None
    """Set when the step met its quorum and another follows: resolve who may decide that one, then
    :meth:`ApprovalRound.open_following`. The decided step stays open meanwhile, so the round always has
    an open step until it is over."""


@dataclass(frozen=True)
class Reresolved:
    """How a step's approvers changed when they were resolved again."""

    gone: list[str]
    """Who was eligible and no longer is."""
    dropped: list[str]
    """Whose decisions on the step no longer count."""
    failure: str | None
    """Why the step can no longer get its approvals (the round fails), or None."""


def planned_steps(plan: RequestPlan) -> list[StepStatus]:
    """A round's steps as the policy planned them, none open yet."""
    return [
        StepStatus(
            name=s.name,
            approvers=s.approvers,
            quorum=s.quorum,
            eligible=s.eligible,
            remind_after=s.remind_after,
            remind_every=s.remind_every,
            escalate_after=s.escalate_after,
            escalate_to=s.escalate_to,
        )
        for s in plan.steps
    ]


def deciders(step: StepStatus) -> list[Approver]:
    """The approvers ``step`` names now: its own, and once it escalated, those it escalated to."""
    return step.approvers + step.escalate_to if step.escalated_at is not None else step.approvers


def approved_by(step: StepStatus, person: str) -> bool:
    return any(d.approver == person and d.approved for d in step.decisions)


@dataclass(eq=False)
class ApprovalRound:
    """One round's steps, as decided now. ``distinct`` arguments say whether one person's approval counts
    for one step of the round only (the rule's ``distinct_approvers``, where it applies)."""

    kind: RoundKind
    steps: list[StepStatus]
    requester: str
    """Who asked: they never decide their own round."""
    extension: int | None = None
    """Which extension of the grant this round decides (its index), for an extension round."""

    @classmethod
    def request(cls, status: RequestStatus) -> ApprovalRound:
        """The request's own round."""
        return cls(RoundKind.REQUEST, status.steps, status.requester)

    @classmethod
    def of(cls, status: RequestStatus) -> ApprovalRound | None:
        """The round open to decisions: the request's own while pending, a pending extension's while active."""
        if status.state is RequestState.PENDING:
            return cls.request(status)
        if status.state is RequestState.ACTIVE and status.extensions:
            extension = status.extensions[-1]
            if extension.state is ExtensionState.PENDING:
                index = len(status.extensions) - 1
                return cls(RoundKind.EXTENSION, extension.steps, status.requester, extension=index)
        return None

    def is_same(self, other: ApprovalRound | None) -> bool:
        """Whether ``other`` is this round (seen again after a wait), not another one or none."""
        return other is not None and other.kind is self.kind and other.extension == self.extension

    @property
    def open_step(self) -> StepStatus | None:
        """The step awaiting decisions now, if any."""
        return next((s for s in self.steps if s.state is StepState.OPEN), None)

    def start(self, at: datetime) -> StepStatus | None:
        """Open the first step; None when the round has no steps (nobody needs to approve)."""
        if not self.steps:
            return None
        return _open(self.steps[0], at)

    # --- who may decide ----------------------------------------------------------------------

    def refusal(self, actor: str, *, distinct: bool) -> Refusal | None:
        """Why ``actor`` may not decide the open step now, or None if they may."""
        step = self.open_step
        if step is None:
            return Refusal(RefusalKind.CONFLICT, "nothing is awaiting a decision")
        if actor == self.requester:
            return Refusal(RefusalKind.FORBIDDEN, "you cannot decide your own request")
        if actor not in step.eligible:
            # Who is eligible is not said: the refusal goes to someone who may not see the request.
            return Refusal(RefusalKind.FORBIDDEN, f"{actor} is not an eligible approver for step {step.name!r}")
        if any(d.approver == actor for d in step.decisions):
            return Refusal(RefusalKind.CONFLICT, f"{actor} has already decided step {step.name!r}")
        if step.approvals >= step.quorum:
            # Its quorum is met and the next step is being resolved: one more approval would count for nothing.
            return Refusal(RefusalKind.CONFLICT, f"step {step.name!r} already has the approvals it needs")
        if distinct:
            earlier = next((s for s in self.steps if s is not step and approved_by(s, actor)), None)
            if earlier is not None:
                return Refusal(
                    RefusalKind.FORBIDDEN,
                    f"{actor} already approved step {earlier.name!r} of this request; "
                    f"step {step.name!r} needs someone else",
                )
        return None

    def free_approvers(self, step: StepStatus, *, distinct: bool) -> list[str]:
        """Who may still decide ``step``: its eligible people, less those who approved another step."""
        if not distinct:
            return list(step.eligible)
        return [p for p in step.eligible if not any(s is not step and approved_by(s, p) for s in self.steps)]

    # --- decisions ---------------------------------------------------------------------------

    def decide(self, decision: Decision) -> Decided:
        """Count ``decision`` on the open step (whoever made it may: see :meth:`refusal`)."""
        index, step = next((i, s) for i, s in enumerate(self.steps) if s.state is StepState.OPEN)
        step.decisions.append(decision)
        if not decision.approved:
            close(step, StepState.DENIED)
            return Decided(step, outcome=RoundOutcome.DENIED)
        if step.approvals < step.quorum:
            return Decided(step)
        if index + 1 == len(self.steps):
            close(step, StepState.APPROVED)
            return Decided(step, outcome=RoundOutcome.APPROVED)
        return Decided(step, following=self.steps[index + 1])

    def open_following(self, decided: Decided, eligible: list[str], *, distinct: bool, at: datetime) -> str | None:
        """Close the decided step and open the one after it, decided by ``eligible`` (resolved just now).

        Returns why the round fails instead, when fewer people are free to approve the following step
        than its quorum (they approved an earlier step, or too few are eligible).
        """
        following = decided.following
        assert following is not None
        following.eligible = eligible
        close(decided.step, StepState.APPROVED)
        free = self.free_approvers(following, distinct=distinct)
        if len(free) < following.quorum:
            return (
                f"step {following.name!r} needs {following.quorum} approval(s) "
                f"but only {len(free)} eligible approver(s) remain"
            )
        _open(following, at)
        return None

    # --- approvers who leave -----------------------------------------------------------------

    def reresolves(self, step: StepStatus, eligible: list[str]) -> bool:
        """Whether ``eligible`` (resolved again) changes who may decide ``step``, a step still awaiting
        approvals; a step decided or ended meanwhile is left alone."""
        if step.state is not StepState.OPEN or step.approvals >= step.quorum:
            return False
        gone = [person for person in step.eligible if person not in eligible]
        return bool(gone) or sorted(eligible) != sorted(step.eligible)

    def reresolve(self, step: StepStatus, eligible: list[str], *, left: list[str], distinct: bool) -> Reresolved:
        """Make ``eligible`` the people who may decide ``step``, keeping the decisions of those still
        among them. ``left`` are the people who left the organisation, named apart from those who only
        stopped being eligible when the step can no longer get its approvals."""
        gone = [person for person in step.eligible if person not in eligible]
        dropped = [d.approver for d in step.decisions if d.approver not in eligible]
        step.decisions = [d for d in step.decisions if d.approver in eligible]
        step.eligible = eligible
        needed = step.quorum - step.approvals
        available = [
            p for p in self.free_approvers(step, distinct=distinct) if all(d.approver != p for d in step.decisions)
        ]
        failure = None if len(available) >= needed else _short_of(step, needed, available, gone=gone, left=left)
        return Reresolved(gone=gone, dropped=dropped, failure=failure)


def _short_of(step: StepStatus, needed: int, available: list[str], *, gone: list[str], left: list[str]) -> str:
    """Why ``step`` can no longer get its approvals, naming who left and who is no longer eligible."""
    departed = [p for p in gone if p in left]
    moved = [p for p in gone if p not in left]
    who = "; ".join(
        part
        for part in (
            f"{', '.join(departed)} left" if departed else "",
            f"{', '.join(moved)} no longer eligible" if moved else "",
        )
        if part
    )
    remain = "no eligible approver remains" if not available else f"only {len(available)} eligible approver(s) remain"
    why = f"step {step.name!r} needs {needed} approval{'' if needed == 1 else 's'} but {remain}"
    return f"{why}: {who}" if who else why


def _open(step: StepStatus, at: datetime) -> StepStatus:
    step.state = StepState.OPEN
    step.opened_at = at
    first_reminder = step.remind_after or step.remind_every
    step.next_reminder_at = at + first_reminder if first_reminder is not None else None
    step.escalate_at = at + step.escalate_after if step.escalate_after is not None else None
    return step


def close(step: StepStatus, state: StepState) -> None:
    """End ``step`` in ``state``: no reminder is due for it any more."""
    step.state = state
    step.next_reminder_at = None


# --- reminders and escalation ------------------------------------------------------------------


class TimerKind(StrEnum):
    REMINDER = "reminder"
    ESCALATION = "escalation"


@dataclass(frozen=True)
class StepTimer:
    """What is due next on an open step, and when."""

    at: datetime
    kind: TimerKind


def next_timer(step: StepStatus | None) -> StepTimer | None:
    """The next reminder or escalation of ``step``, whichever comes first; None for a step that is not
    awaiting approvals (decided, or met its quorum while the next step is being resolved) or has none due.
    An escalation due with a reminder comes first, so the reminder reaches those it added."""
    if step is None or step.state is not StepState.OPEN or step.approvals >= step.quorum:
        return None
    due = []
    if step.escalate_at is not None and step.escalated_at is None:
        due.append(StepTimer(step.escalate_at, TimerKind.ESCALATION))
    if step.next_reminder_at is not None:
        due.append(StepTimer(step.next_reminder_at, TimerKind.REMINDER))
    return min(due, key=lambda timer: timer.at) if due else None


def remind(step: StepStatus, at: datetime) -> int:
    """Count a reminder of ``step`` sent ``at``, and say when the next is due (``remind_every`` later, up
    to ``MAX_REMINDERS``); returns the reminder's number."""
    step.reminders += 1
    again = step.remind_every is not None and step.reminders < MAX_REMINDERS
    step.next_reminder_at = at + step.remind_every if again and step.remind_every is not None else None
    return step.reminders


def escalate(step: StepStatus, people: list[str], *, requester: str, at: datetime) -> list[str]:
    """Let ``people`` (those ``escalate_to`` names, resolved now) decide ``step`` too; returns who was added.
    The requester never is; the distinct-approver rule holds for them as for anyone eligible."""
    added = [person for person in people if person not in step.eligible and person != requester]
    step.eligible = [*step.eligible, *added]
    step.escalated_at = at
    return added

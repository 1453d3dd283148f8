"""The approval round on plain data: who may decide, quorums, distinct approvers, re-resolution; no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from access.approval import ApprovalRound, RoundKind, RoundOutcome, planned_steps
from access.errors import RefusalKind
from access.requests import (
    Decision,
    ExtensionState,
    ExtensionStatus,
    RequestState,
    RequestStatus,
    StepState,
    StepStatus,
)
from access.types import Approver, ApproverKind, RequestPlan, StepPlan

REQUESTER = "alan@example.com"
LINUS = "linus@example.com"
FRANCES = "frances@example.com"
RADIA = "radia@example.com"
ADA = "ada@example.com"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _plan(*steps: tuple[str, list[str], int]) -> RequestPlan:
    return RequestPlan(
        policy="prod-db",
        rule="admin",
        max_duration=timedelta(hours=8),
        steps=[
            StepPlan(
                name=name, approvers=[Approver(kind=ApproverKind.GROUP, name=name)], quorum=quorum, eligible=people
            )
            for name, people, quorum in steps
        ],
    )


def _status(*steps: tuple[str, list[str], int], distinct: bool = True) -> RequestStatus:
    return RequestStatus(
        id="r1",
        requester=REQUESTER,
        role="ledger/prod-db/admin",
        duration=timedelta(hours=1),
        justification="incident",
        policy="prod-db",
        rule="admin",
        created_at=NOW,
        distinct_approvers=distinct,
        steps=planned_steps(_plan(*steps)),
    )


def _request_round(*steps: tuple[str, list[str], int]) -> ApprovalRound:
    round = ApprovalRound.request(_status(*steps))
    round.start(NOW)
    return round


def _decision(person: str, *, approved: bool = True) -> Decision:
    return Decision(approver=person, approved=approved, comment="", at=NOW)


def _granted_with_extension(*steps: tuple[str, list[str], int]) -> RequestStatus:
    status = _status()
    status.state = RequestState.ACTIVE
    status.extensions = [
        ExtensionStatus(
            duration=timedelta(hours=1),
            justification="",
            requested_at=NOW,
            rule="r",
            state=ExtensionState.APPROVED,
        ),
        ExtensionStatus(
            duration=timedelta(hours=2),
            justification="more",
            requested_at=NOW,
            rule="r",
            steps=planned_steps(_plan(*steps)),
        ),
    ]
    return status


# --- which round is open -------------------------------------------------------------------


def test_a_pending_request_decides_its_own_round() -> None:
    status = _status(("manager", [LINUS], 1))
    round = ApprovalRound.of(status)
    assert round is not None and round.kind is RoundKind.REQUEST and round.steps is status.steps
    assert round.extension is None


def test_an_active_grant_decides_its_pending_extensions_round_and_no_other() -> None:
    status = _granted_with_extension(("manager", [LINUS], 1))
    round = ApprovalRound.of(status)
    assert round is not None and round.kind is RoundKind.EXTENSION and round.extension == 1
    assert round.steps is status.extensions[1].steps
    assert round.is_same(ApprovalRound.of(status))
    assert not round.is_same(ApprovalRound.request(status))

    status.extensions[1].state = ExtensionState.DENIED
    assert ApprovalRound.of(status) is None


@pytest.mark.parametrize("state", [RequestState.PROVISIONING, RequestState.REVOKING, RequestState.EXPIRED])
def test_nothing_is_decided_outside_pending_or_active(state: RequestState) -> None:
    status = _granted_with_extension(("manager", [LINUS], 1))
    status.state = state
    assert ApprovalRound.of(status) is None


def test_starting_a_round_opens_its_first_step_only() -> None:
    round = ApprovalRound.request(_status(("manager", [LINUS], 1), ("owners", [FRANCES], 1)))
    first = round.start(NOW)
    assert first is round.steps[0] and first.state is StepState.OPEN and first.opened_at == NOW
    assert round.steps[1].state is StepState.WAITING
    assert ApprovalRound.request(_status()).start(NOW) is None


# --- who may decide --------------------------------------------------------------------------


def test_nobody_decides_their_own_request_even_when_eligible() -> None:
    round = _request_round(("peers", [REQUESTER, LINUS], 1))
    refusal = round.refusal(REQUESTER, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.FORBIDDEN
    assert refusal.message == "you cannot decide your own request"


def test_someone_not_eligible_is_refused_without_being_told_who_is() -> None:
    round = _request_round(("manager", [LINUS], 1))
    refusal = round.refusal(ADA, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.FORBIDDEN
    assert refusal.message == "ada@example.com is not an eligible approver for step 'manager'"
    assert LINUS not in refusal.message
    assert round.refusal(LINUS, distinct=True) is None


def test_a_second_decision_by_the_same_person_is_a_conflict() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 2))
    round.decide(_decision(FRANCES))
    refusal = round.refusal(FRANCES, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.CONFLICT
    assert refusal.message == "frances@example.com has already decided step 'owners'"


def test_a_step_that_met_its_quorum_takes_no_more_approvals_while_the_next_is_resolved() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 1), ("security", [ADA], 1))
    decided = round.decide(_decision(FRANCES))
    assert decided.following is round.steps[1] and round.open_step is round.steps[0]
    refusal = round.refusal(RADIA, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.CONFLICT
    assert refusal.message == "step 'owners' already has the approvals it needs"


def test_one_approval_counts_for_one_step_unless_the_rule_says_otherwise() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 1), ("security", [RADIA, ADA], 1))
    decided = round.decide(_decision(RADIA))
    assert round.open_following(decided, [RADIA, ADA], distinct=True, at=NOW) is None

    refusal = round.refusal(RADIA, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.FORBIDDEN
    assert refusal.message == (
        "radia@example.com already approved step 'owners' of this request; step 'security' needs someone else"
    )
    assert round.refusal(RADIA, distinct=False) is None
    assert round.refusal(ADA, distinct=True) is None


def test_nothing_open_is_a_conflict() -> None:
    round = ApprovalRound.request(_status(("manager", [LINUS], 1)))
    refusal = round.refusal(LINUS, distinct=True)
    assert refusal is not None and refusal.kind is RefusalKind.CONFLICT


# --- decisions -------------------------------------------------------------------------------


def test_a_denial_ends_the_round_denied() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 2), ("security", [ADA], 1))
    decided = round.decide(_decision(FRANCES, approved=False))
    assert decided.outcome is RoundOutcome.DENIED and decided.following is None
    assert round.steps[0].state is StepState.DENIED and round.open_step is None


def test_approvals_below_the_quorum_keep_the_step_open() -> None:
    round = _request_round(("owners", [FRANCES, RADIA, ADA], 2))
    decided = round.decide(_decision(FRANCES))
    assert decided.outcome is None and decided.following is None
    assert round.open_step is round.steps[0] and round.steps[0].approvals == 1


def test_the_quorum_on_the_last_step_approves_the_round() -> None:
    round = _request_round(("owners", [FRANCES, RADIA, ADA], 2))
    round.decide(_decision(FRANCES))
    decided = round.decide(_decision(RADIA))
    assert decided.outcome is RoundOutcome.APPROVED and round.steps[0].state is StepState.APPROVED


def test_the_quorum_on_an_earlier_step_opens_the_next_with_the_people_resolved_now() -> None:
    round = _request_round(("manager", [LINUS], 1), ("owners", [FRANCES], 1))
    decided = round.decide(_decision(LINUS))
    later = NOW + timedelta(minutes=5)
    assert round.open_following(decided, [FRANCES, RADIA], distinct=True, at=later) is None
    assert [s.state for s in round.steps] == [StepState.APPROVED, StepState.OPEN]
    assert round.steps[1].eligible == [FRANCES, RADIA] and round.steps[1].opened_at == later


def test_a_following_step_without_enough_free_approvers_fails_the_round() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 1), ("security", [RADIA, ADA], 2))
    decided = round.decide(_decision(RADIA))
    failure = round.open_following(decided, [RADIA, ADA], distinct=True, at=NOW)
    assert failure == "step 'security' needs 2 approval(s) but only 1 eligible approver(s) remain"
    assert round.steps[0].state is StepState.APPROVED and round.steps[1].state is StepState.WAITING
    assert round.open_step is None


def test_without_distinct_approvers_everyone_eligible_counts_for_the_following_step() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 1), ("security", [RADIA, ADA], 2))
    decided = round.decide(_decision(RADIA))
    assert round.open_following(decided, [RADIA, ADA], distinct=False, at=NOW) is None
    assert round.open_step is round.steps[1]


# --- approvers who leave ---------------------------------------------------------------------


def test_resolving_the_same_people_again_changes_nothing() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 2))
    step = round.steps[0]
    assert not round.reresolves(step, [RADIA, FRANCES])
    assert round.reresolves(step, [FRANCES])
    assert round.reresolves(step, [FRANCES, RADIA, ADA])


def test_a_step_decided_meanwhile_is_not_resolved_again() -> None:
    round = _request_round(("owners", [FRANCES, RADIA], 1), ("security", [ADA], 1))
    step = round.steps[0]
    round.decide(_decision(FRANCES))  # quorum met, the next step being resolved
    assert not round.reresolves(step, [RADIA])
    step.state = StepState.APPROVED
    assert not round.reresolves(step, [RADIA])


def test_re_resolution_keeps_the_decisions_of_those_still_eligible() -> None:
    round = _request_round(("owners", [FRANCES, RADIA, ADA, LINUS], 3))
    step = round.steps[0]
    round.decide(_decision(FRANCES))
    round.decide(_decision(RADIA))
    changed = round.reresolve(step, [FRANCES, ADA, LINUS], left=[RADIA], distinct=True)
    assert changed.gone == [RADIA] and changed.dropped == [RADIA] and changed.failure is None
    assert [d.approver for d in step.decisions] == [FRANCES]
    assert step.eligible == [FRANCES, ADA, LINUS] and step.state is StepState.OPEN


def test_re_resolution_fails_the_round_when_too_few_remain_naming_who_left_and_who_moved() -> None:
    round = _request_round(("owners", [FRANCES, RADIA, ADA, LINUS], 3))
    step = round.steps[0]
    round.decide(_decision(FRANCES))
    changed = round.reresolve(step, [FRANCES, ADA], left=[RADIA], distinct=True)
    assert changed.gone == [RADIA, LINUS] and changed.dropped == []
    assert changed.failure == (
        "step 'owners' needs 2 approvals but only 1 eligible approver(s) remain: "
        "radia@example.com left; linus@example.com no longer eligible"
    )


def test_re_resolution_says_when_no_eligible_approver_remains() -> None:
    round = _request_round(("manager", [LINUS], 1))
    changed = round.reresolve(round.steps[0], [], left=[LINUS], distinct=True)
    assert changed.failure == "step 'manager' needs 1 approval but no eligible approver remains: linus@example.com left"


def test_re_resolution_does_not_count_someone_who_approved_an_earlier_step() -> None:
    round = _request_round(("owners", [FRANCES], 1), ("security", [FRANCES, RADIA, ADA], 2))
    decided = round.decide(_decision(FRANCES))
    assert round.open_following(decided, [FRANCES, RADIA, ADA], distinct=True, at=NOW) is None
    round.decide(_decision(RADIA))
    security = round.steps[1]
    changed = round.reresolve(security, [FRANCES, RADIA], left=[ADA], distinct=True)
    assert changed.failure is not None and "only 0 eligible" not in changed.failure
    assert changed.failure.startswith("step 'security' needs 1 approval but no eligible approver remains")
    assert round.reresolve(security, [FRANCES, RADIA], left=[ADA], distinct=False).failure is None


# --- extension rounds ------------------------------------------------------------------------


def test_an_extension_round_is_approved_by_its_own_steps() -> None:
    status = _granted_with_extension(("manager", [LINUS], 1))
    round = ApprovalRound.of(status)
    assert round is not None
    round.start(NOW)
    assert status.awaits_decision_from(LINUS) and not status.awaits_decision_from(REQUESTER)
    decided = round.decide(_decision(LINUS))
    assert decided.outcome is RoundOutcome.APPROVED
    assert status.extensions[1].steps[0].state is StepState.APPROVED and status.steps == []


def test_an_extension_round_is_denied_by_one_denial() -> None:
    status = _granted_with_extension(("manager", [LINUS], 1), ("owners", [FRANCES], 1))
    round = ApprovalRound.of(status)
    assert round is not None
    round.start(NOW)
    assert round.decide(_decision(LINUS, approved=False)).outcome is RoundOutcome.DENIED
    assert not status.awaits_decision_from(LINUS)


def test_the_approvals_list_follows_the_workflows_rules() -> None:
    status = _status(("owners", [FRANCES, RADIA], 1), ("security", [RADIA, ADA], 1))
    round = ApprovalRound.request(status)
    round.start(NOW)
    assert status.awaits_decision_from(RADIA) and not status.awaits_decision_from(ADA)
    decided = round.decide(_decision(RADIA))
    round.open_following(decided, [RADIA, ADA], distinct=True, at=NOW)
    assert status.open_step() is status.steps[1]
    assert not status.awaits_decision_from(RADIA) and status.awaits_decision_from(ADA)
    status.distinct_approvers = False
    assert status.awaits_decision_from(RADIA)


def test_planned_steps_start_waiting_with_the_plans_people() -> None:
    steps = planned_steps(_plan(("manager", [LINUS], 1), ("owners", [FRANCES, RADIA], 2)))
    assert [(s.name, s.eligible, s.quorum, s.state) for s in steps] == [
        ("manager", [LINUS], 1, StepState.WAITING),
        ("owners", [FRANCES, RADIA], 2, StepState.WAITING),
    ]
    assert all(isinstance(s, StepStatus) and s.decisions == [] for s in steps)


# --- reminders and escalation -----------------------------------------------------------------


def _timed_step(**timers: object) -> StepStatus:
    plan = RequestPlan(
        policy="prod-db",
        rule="admin",
        max_duration=timedelta(hours=8),
        steps=[StepPlan(name="m", approvers=[Approver(kind=ApproverKind.MANAGER)], quorum=1, eligible=[LINUS])],
    )
    plan.steps[0] = plan.steps[0].model_copy(update=timers)
    return planned_steps(plan)[0]


def test_a_step_without_reminders_or_escalation_has_no_timer() -> None:
    from access.approval import next_timer

    round = ApprovalRound(RoundKind.REQUEST, [_timed_step()], REQUESTER)
    step = round.start(NOW)
    assert step is not None and next_timer(step) is None


def test_reminders_come_after_remind_after_then_every_remind_every_up_to_the_cap() -> None:
    from access.approval import TimerKind, next_timer, remind
    from access.limits import MAX_REMINDERS

    round = ApprovalRound(
        RoundKind.REQUEST, [_timed_step(remind_after=timedelta(hours=1), remind_every=timedelta(hours=4))], REQUESTER
    )
    step = round.start(NOW)
    assert step is not None
    timer = next_timer(step)
    assert timer is not None and (timer.at, timer.kind) == (NOW + timedelta(hours=1), TimerKind.REMINDER)
    assert remind(step, timer.at) == 1
    assert step.next_reminder_at == NOW + timedelta(hours=5)
    for _ in range(MAX_REMINDERS - 1):
        remind(step, NOW)
    assert step.reminders == MAX_REMINDERS and next_timer(step) is None  # no policy grows a history without end


def test_escalation_comes_before_a_reminder_due_with_it_and_never_adds_the_requester() -> None:
    from access.approval import TimerKind, escalate, next_timer

    step = _timed_step(
        remind_after=timedelta(hours=2),
        escalate_after=timedelta(hours=2),
        escalate_to=[Approver(kind=ApproverKind.GROUP, name="security")],
    )
    round = ApprovalRound(RoundKind.REQUEST, [step], REQUESTER)
    round.start(NOW)
    timer = next_timer(step)
    assert timer is not None and timer.kind is TimerKind.ESCALATION
    assert escalate(step, [ADA, REQUESTER, LINUS], requester=REQUESTER, at=timer.at) == [ADA]
    assert step.eligible == [LINUS, ADA] and step.escalated_at == timer.at
    assert round.refusal(ADA, distinct=True) is None  # the person escalated to may decide now
    following = next_timer(step)
    assert following is not None and following.kind is TimerKind.REMINDER


def test_a_decided_step_is_reminded_no_more() -> None:
    from access.approval import next_timer

    round = ApprovalRound(RoundKind.REQUEST, [_timed_step(remind_every=timedelta(hours=1))], REQUESTER)
    step = round.start(NOW)
    assert step is not None and step.next_reminder_at == NOW + timedelta(hours=1)
    round.decide(Decision(approver=LINUS, approved=True, at=NOW))
    assert step.next_reminder_at is None and next_timer(step) is None

"""Who is told what when a request moves (``access.notifications.notices_for``), on plain data; no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from access.notifications import NoticeKind, needs_admins, notices_for
from access.requests import (
    Decision,
    ExtensionStatus,
    RequestState,
    RequestStatus,
    StepState,
    StepStatus,
)
from access.types import Approver, ApproverKind, AuditEntry

REQUESTER = "alan@example.com"
LINUS, FRANCES, RADIA = "linus@example.com", "frances@example.com", "radia@example.com"
ADMIN = "ada@example.com"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _step(name: str, eligible: list[str], state: StepState = StepState.OPEN, quorum: int = 1) -> StepStatus:
    return StepStatus(
        name=name,
        approvers=[Approver(kind=ApproverKind.GROUP, name=name)],
        quorum=quorum,
        eligible=eligible,
        state=state,
        opened_at=NOW if state is not StepState.WAITING else None,
    )


def _status(*steps: StepStatus, state: RequestState = RequestState.PENDING, **fields: object) -> RequestStatus:
    return RequestStatus(
        id="req-1",
        requester=REQUESTER,
        role="ledger/prod-db/admin",
        duration=timedelta(hours=1),
        justification="incident 42",
        policy="prod-db",
        rule="admin",
        state=state,
        created_at=NOW,
        steps=list(steps),
        **fields,  # type: ignore[arg-type]
    )


def _event(action: str, actor: str = "lapse", reason: str = "", **details: object) -> AuditEntry:
    return AuditEntry(actor=actor, action=action, target="access-request-req-1", reason=reason, details=details, at=NOW)


def _told(notices: list, kind: NoticeKind | None = None) -> set[str | None]:  # type: ignore[type-arg]
    """Who is told something new (not only an update of an earlier chat prompt)."""
    return {n.recipient for n in notices if (kind is None or n.kind is kind) and not n.details.get("update_only")}


def _updated(notices: list) -> set[str | None]:  # type: ignore[type-arg]
    """Whose earlier chat prompts are updated, with nothing new sent to them."""
    return {n.recipient for n in notices if n.details.get("update_only")}


def test_an_opened_step_asks_each_eligible_approver_and_broadcasts_once() -> None:
    status = _status(_step("owners", [LINUS, FRANCES]))
    notices = notices_for(status, [_event("request.created", REQUESTER), _event("step.opened", step="owners")], 3)

    assert _told(notices, NoticeKind.DECISION_NEEDED) == {LINUS, FRANCES, None}
    assert {n.key for n in notices} == {
        f"req-1:3:step.opened:decision_needed:{who}" for who in (LINUS, FRANCES, "*")
    }, "the keys are the same whenever the step is recorded again"
    assert all(n.details["step"] == "owners" and n.details["workflow"] == "prod-db" for n in notices)
    assert notices[0].text == f"{REQUESTER} asks for ledger/prod-db/admin for PT1H."


def test_the_eligible_list_of_the_event_counts_and_the_requester_is_never_asked() -> None:
    status = _status(_step("owners", [LINUS, REQUESTER]))
    notices = notices_for(status, [_event("step.opened", step="owners", eligible=[LINUS, REQUESTER])], 1)
    assert _told(notices) == {LINUS, None}


def test_a_reminder_skips_who_already_decided() -> None:
    step = _step("owners", [LINUS, FRANCES], quorum=2)
    step.decisions = [Decision(approver=LINUS, approved=True, at=NOW)]
    notices = notices_for(_status(step), [_event("step.reminded", step="owners")], 5)
    assert _told(notices, NoticeKind.REMINDER) == {FRANCES, None}


def test_a_decision_that_closes_the_step_tells_the_requester_and_updates_the_other_approvers() -> None:
    step = _step("owners", [LINUS, FRANCES], state=StepState.APPROVED)
    status = _status(step, state=RequestState.PROVISIONING)
    events = [
        _event("request.approved", LINUS, "fine", step="owners", approvals="1/1"),
        _event("request.approved", reason="all steps approved"),
    ]
    notices = notices_for(status, events, 4)

    assert _told(notices, NoticeKind.DECIDED) == {REQUESTER, FRANCES, None}
    assert _updated(notices) == {LINUS}, "the decider's own prompt loses its buttons, with nothing new sent"
    assert len([n for n in notices if n.recipient is None]) == 1, "the round's own end adds no second broadcast"
    told = next(n for n in notices if n.recipient == REQUESTER)
    assert told.details["approved"] is True and told.details["comment"] == "fine" and told.actor == LINUS


def test_a_decision_leaving_the_step_open_does_not_take_the_other_approvers_buttons() -> None:
    step = _step("owners", [LINUS, FRANCES], quorum=2)
    step.decisions = [Decision(approver=LINUS, approved=True, at=NOW)]
    notices = notices_for(_status(step), [_event("request.approved", LINUS, step="owners", approvals="1/2")], 4)
    assert _told(notices) == {REQUESTER, None}
    assert _updated(notices) == {LINUS}, "only the decider's own prompt is closed"


def test_a_pending_request_that_ends_closes_the_prompts_of_those_still_asked() -> None:
    cancelled = _status(_step("owners", [LINUS, FRANCES]), state=RequestState.CANCELLED)
    notices = notices_for(cancelled, [_event("request.cancelled", REQUESTER, "not needed")], 3)
    assert _told(notices) == {None} and _updated(notices) == {LINUS, FRANCES}

    timed_out = _status(_step("owners", [LINUS], state=StepState.EXPIRED), state=RequestState.TIMED_OUT)
    notices = notices_for(timed_out, [_event("request.timed_out", reason="no decision")], 3)
    assert _told(notices) == {REQUESTER, None} and _updated(notices) == {LINUS}


def test_a_denial_ends_the_request_with_one_message_to_the_requester() -> None:
    step = _step("owners", [LINUS, FRANCES], state=StepState.DENIED)
    status = _status(step, state=RequestState.DENIED)
    notices = notices_for(status, [_event("request.denied", FRANCES, "not now", step="owners")], 4)
    assert [(n.kind, n.recipient) for n in notices if n.recipient == REQUESTER] == [(NoticeKind.DECIDED, REQUESTER)]
    assert _told(notices, NoticeKind.DECIDED) == {REQUESTER, LINUS, None}
    assert notices[0].details["approved"] is False


def test_a_rule_needing_no_approval_broadcasts_its_approval_only() -> None:
    notices = notices_for(_status(), [_event("request.approved", reason="rule 'x' needs no approval")], 1)
    assert [(n.kind, n.recipient) for n in notices] == [(NoticeKind.DECIDED, None)]


def test_granted_expiring_and_ended_go_to_the_requester() -> None:
    ends = NOW + timedelta(hours=1)
    status = _status(state=RequestState.ACTIVE, expires_at=ends)
    granted = notices_for(status, [_event("grant.provisioned", account="alan", expires_at=ends.isoformat())], 5)
    assert _told(granted, NoticeKind.GRANTED) == {REQUESTER, None}
    assert granted[0].details["account"] == "alan"

    expiring = notices_for(status, [_event("grant.expiring_soon", expires_at=ends.isoformat())], 6)
    assert _told(expiring, NoticeKind.EXPIRING_SOON) == {REQUESTER, None}
    assert "2026-12-01 10:00 UTC" in expiring[0].text

    ended = notices_for(status.model_copy(update={"state": RequestState.EXPIRED}), [_event("grant.expired")], 7)
    assert _told(ended, NoticeKind.ENDED) == {REQUESTER, None}


def test_nobody_is_told_of_what_they_did_themselves() -> None:
    status = _status(state=RequestState.CANCELLED)
    notices = notices_for(status, [_event("request.cancelled", REQUESTER, "not needed")], 2)
    assert _told(notices) == {None} and _updated(notices) == set()


def test_trouble_goes_to_the_admins() -> None:
    events = [_event("request.failed", reason="provisioning failed: boom")]
    assert needs_admins(events) and not needs_admins([_event("grant.expired")])
    notices = notices_for(_status(state=RequestState.FAILED), events, 3, [ADMIN, RADIA])
    assert _told(notices, NoticeKind.TROUBLE) == {ADMIN, RADIA, None}
    assert _told(notices, NoticeKind.ENDED) == {REQUESTER}

    failing = notices_for(
        _status(state=RequestState.REVOKING), [_event("grant.revoke_failing", reason="down")], 9, [ADMIN]
    )
    assert _told(failing, NoticeKind.TROUBLE) == {ADMIN, None}
    assert _told(failing, NoticeKind.ENDED) == set()


def test_an_extension_round_asks_its_own_approvers_and_decides_to_the_requester() -> None:
    extension = ExtensionStatus(
        duration=timedelta(minutes=30),
        justification="more",
        requested_at=NOW,
        rule="admin",
        steps=[_step("owners", [RADIA])],
    )
    status = _status(_step("owners", [LINUS], state=StepState.APPROVED), state=RequestState.ACTIVE)
    status.extensions = [extension]
    asked = notices_for(status, [_event("extension.requested", REQUESTER), _event("step.opened", step="owners")], 8)
    assert _told(asked, NoticeKind.DECISION_NEEDED) == {RADIA, None}
    assert asked[0].details["extension"] is True and asked[0].details["extension_duration"] == "PT30M"
    assert "extend" in asked[0].text

    extension.steps[0].state = StepState.APPROVED
    decided = notices_for(status, [_event("extension.approved", RADIA, step="owners")], 9)
    assert _told(decided, NoticeKind.DECIDED) == {REQUESTER, None}


def test_reauthenticating_workflows_say_so_so_buttons_only_link() -> None:
    status = _status(_step("owners", [LINUS]), reauthenticate_within=timedelta(minutes=5))
    notices = notices_for(status, [_event("step.opened", step="owners")], 1)
    assert all(n.details["reauthenticate"] is True for n in notices)


def test_events_that_notify_nobody_make_no_notice() -> None:
    status = _status(_step("owners", [LINUS]))
    assert (
        notices_for(status, [_event("request.created", REQUESTER), _event("step.reresolved", step="owners")], 1) == []
    )

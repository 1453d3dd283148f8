"""The approvals inbox says exactly who may decide a request now, by the workflow's own rule, and follows its
status as it is rewritten: distinct approvers, decisions made, the requester, and an ended request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select

from access.requests import Decision, RequestState, RequestStatus, StepState, StepStatus
from access.types import Approver, ApproverKind
from store.approval_inbox import deciders, keep_inbox
from store.db import migrate, session_scope
from store.tables import ApprovalInbox

NOW = datetime.now(UTC)
OWNERS = [Approver(kind=ApproverKind.RESOURCE_OWNER)]


def _two_steps(*, distinct: bool = True) -> RequestStatus:
    """frances approved the first step; the second is open to frances, radia, ada and alan (the requester)."""
    first = StepStatus(
        name="manager",
        approvers=OWNERS,
        quorum=1,
        eligible=["frances@example.com"],
        state=StepState.APPROVED,
        decisions=[Decision(approver="frances@example.com", approved=True, at=NOW)],
    )
    second = StepStatus(
        name="owners",
        approvers=OWNERS,
        quorum=2,
        eligible=["frances@example.com", "radia@example.com", "alan@example.com", "ada@example.com"],
        state=StepState.OPEN,
        opened_at=NOW,
    )
    return RequestStatus(
        id="req",
        requester="alan@example.com",
        role="ledger/prod-db/admin",
        duration=timedelta(hours=1),
        justification="",
        policy="critical",
        rule="two-person rule",
        created_at=NOW,
        steps=[first, second],
        distinct_approvers=distinct,
    )


def test_deciders_are_who_the_workflow_would_let_decide() -> None:
    status = _two_steps()
    # Not the requester; not frances, whose approval already counted for the first step.
    assert deciders(status) == ["ada@example.com", "radia@example.com"]
    assert deciders(_two_steps(distinct=False)) == ["ada@example.com", "frances@example.com", "radia@example.com"]
    for person in ("ada@example.com", "radia@example.com", "frances@example.com", "alan@example.com"):
        assert (person in deciders(status)) == status.awaits_decision_from(person)

    status.steps[1].decisions.append(Decision(approver="radia@example.com", approved=True, at=NOW))
    assert deciders(status) == ["ada@example.com"]  # radia decided this step already
    status.state = RequestState.DENIED
    assert deciders(status) == []


def test_the_rows_follow_the_status_as_it_is_rewritten(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lapse.db'}"
    migrate(url)

    def inbox() -> list[str]:
        with session_scope(url, write=False) as session:
            return sorted(session.exec(select(ApprovalInbox.approver).where(ApprovalInbox.request_id == "req")))

    status = _two_steps()
    with session_scope(url) as session:
        keep_inbox(session, "req", status)
    assert inbox() == ["ada@example.com", "radia@example.com"]

    status.steps[1].decisions.append(Decision(approver="radia@example.com", approved=True, at=NOW))
    with session_scope(url) as session:
        keep_inbox(session, "req", status)
    assert inbox() == ["ada@example.com"]

    with session_scope(url) as session:
        keep_inbox(session, "req", None)  # a status nobody can read awaits nobody
    assert inbox() == []

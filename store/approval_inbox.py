"""The approvals inbox: who may decide each request now, kept beside the request's status.

``ApprovalInbox`` holds one row per open decision and person who may make it, so an approver's list is a
range of an index however many requests are pending. The rows are derived from the status alone, by the
rule the workflow itself applies (``access.approval.ApprovalRound.refusal``), and rewritten in the same
transaction as the status: whoever writes ``AccessRequest.status`` calls :func:`keep_inbox`. Readers still
check each status they show against that rule, so a row can only ever add a candidate, never a decision.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import Session, col, select

from access.approval import ApprovalRound
from access.requests import RequestStatus
from store.tables import ApprovalInbox


def deciders(status: RequestStatus) -> list[str]:
    """Who may decide the request's open round now (its own step while pending, a pending extension's
    while active): the open step's eligible people, less the requester, those who decided the step
    already and, with distinct approvers, those who approved another step of the round."""
    round = ApprovalRound.of(status)
    step = round.open_step if round is not None else None
    if round is None or step is None:
        return []
    distinct = status.distinct_approvers
    return sorted({person for person in step.eligible if round.refusal(person, distinct=distinct) is None})


def keep_inbox(session: Session, request_id: str, status: RequestStatus | None) -> None:
    """Make the request's inbox rows say who may decide ``status`` (None: nobody, a status nobody can read),
    in the caller's transaction; rows that stay are left alone."""
    wanted = set(deciders(status)) if status is not None else set()
    held = set(session.exec(select(ApprovalInbox.approver).where(ApprovalInbox.request_id == request_id)))
    gone = held - wanted
    if gone:
        session.execute(
            delete(ApprovalInbox).where(
                col(ApprovalInbox.request_id) == request_id, col(ApprovalInbox.approver).in_(sorted(gone))
            )
        )
    if status is not None:
        for person in sorted(wanted - held):
            session.add(ApprovalInbox(request_id=request_id, approver=person, created_at=status.created_at))

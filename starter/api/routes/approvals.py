"""GET /api/approvals: the requests and extensions the caller can decide now."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from access.db import session_scope
from access.tables import AccessRequest
from access.types import ExtensionState, RequestState, RequestStatus, StepState, StepStatus
from starter.api.deps import CurrentUser, SettingsDep

router = APIRouter(prefix="/api/approvals", tags=["approvals"])


def _awaits(steps: list[StepStatus], email: str) -> bool:
    step = next((s for s in steps if s.state is StepState.OPEN), None)
    return step is not None and email in step.eligible and all(d.approver != email for d in step.decisions)


@router.get("")
def list_approvals(user: CurrentUser, settings: SettingsDep) -> list[RequestStatus]:
    """Pending requests, and pending extensions of active grants, awaiting your decision."""
    states = [RequestState.PENDING.value, RequestState.ACTIVE.value]
    query = select(AccessRequest).where(col(AccessRequest.state).in_(states)).order_by(col(AccessRequest.created_at))
    waiting: list[RequestStatus] = []
    with session_scope(settings.db_url, write=False) as session:
        for row in session.exec(query):
            status = RequestStatus.model_validate(row.status)
            if status.state is RequestState.PENDING:
                steps = status.steps
            elif status.extensions and status.extensions[-1].state is ExtensionState.PENDING:
                steps = status.extensions[-1].steps
            else:
                continue
            if _awaits(steps, user.email):
                waiting.append(status)
    return waiting

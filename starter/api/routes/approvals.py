"""GET /api/approvals: the requests and extensions the caller can decide now."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from access.requests import RequestState, RequestStatus
from starter.api.deps import CurrentUser, SettingsDep
from starter.api.problems import responses
from store.db import session_scope
from store.tables import AccessRequest

router = APIRouter(prefix="/api/approvals", tags=["approvals"], responses=responses(401))


@router.get("")
def list_approvals(user: CurrentUser, settings: SettingsDep) -> list[RequestStatus]:
    """Pending requests, and pending extensions of active grants, awaiting your decision."""
    states = [RequestState.PENDING.value, RequestState.ACTIVE.value]
    query = select(AccessRequest).where(col(AccessRequest.state).in_(states)).order_by(col(AccessRequest.created_at))
    waiting: list[RequestStatus] = []
    with session_scope(settings.db_url, write=False) as session:
        for row in session.exec(query):
            status = RequestStatus.model_validate(row.status)
            if status.awaits_decision_from(user.email):
                waiting.append(status)
    return waiting

"""What one person holds and has asked for: the "my access" view, for the caller alone (admins included)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel import col, select

from access.requests import RequestStatus
from starter.services.grants import GrantOut, list_grants
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, User

RECENT_REQUESTS = 50
"""How many of one's own requests the view lists, newest first."""


class MyAccess(BaseModel):
    grants: list[GrantOut]
    """Active grants, soonest expiry first (JIT, birthright and external alike)."""
    requests: list[RequestStatus]
    """The caller's own requests, newest first (an admin's list is theirs too, not everyone's)."""


def my_access(settings: Settings, user: User, *, limit: int = RECENT_REQUESTS) -> MyAccess:
    query = (
        select(AccessRequest)
        .where(AccessRequest.requester == user.email)
        .order_by(col(AccessRequest.created_at).desc())
        .limit(limit)
    )
    with session_scope(settings.db_url, write=False) as session:
        mine = [RequestStatus.model_validate(row.status) for row in session.exec(query)]
    return MyAccess(grants=list_grants(settings, user, everyone=False), requests=mine)

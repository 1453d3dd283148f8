"""The audit log: read it, and check that nobody edited it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import col, select

from access.db import session_scope, verify_audit
from access.tables import AuditEvent
from starter.api.deps import CurrentUser, SettingsDep, require_admin

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    details: dict[str, Any]


class AuditCheck(BaseModel):
    intact: bool
    events: int
    first_altered: int | None


@router.get("")
def list_audit(
    user: CurrentUser,
    settings: SettingsDep,
    target: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditOut]:
    """Audit events, newest first (admins)."""
    require_admin(user)
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    for column, value in ((AuditEvent.target, target), (AuditEvent.actor, actor), (AuditEvent.action, action)):
        if value is not None:
            query = query.where(column == value)
    with session_scope(settings.db_url, write=False) as session:
        return [AuditOut.model_validate(e, from_attributes=True) for e in session.exec(query)]


@router.get("/verify")
def verify(user: CurrentUser, settings: SettingsDep) -> AuditCheck:
    """Recompute the hash chain: any edited or deleted event breaks it."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        altered = verify_audit(session)
        count = len(session.exec(select(AuditEvent.id)).all())
    return AuditCheck(intact=altered is None, events=count, first_altered=altered)

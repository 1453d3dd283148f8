"""/api/audit: read the audit log, and check that nobody edited, removed or forged any of it (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import audit
from starter.services.audit import AuditCheck, AuditOut
from starter.services.fields import Email, Name, RolePath

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=responses(401, 403))


@router.get("", responses=responses(422))
def list_audit(
    admin: AdminUser,
    settings: SettingsDep,
    target: Annotated[RolePath | None, Query(description="Only events about this target.")] = None,
    actor: Annotated[Email | None, Query(description="Only events by this person.")] = None,
    action: Annotated[Name | None, Query(description="Only events of this action.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditOut]:
    """Audit events, newest first (admins)."""
    return audit.list_events(settings, admin, target=target, actor=actor, action=action, limit=limit)


@router.get("/verify")
async def verify(admin: AdminUser, settings: SettingsDep, client: ClientDep) -> AuditCheck:
    """Check every event's MAC and link, and that the log reaches the heads checkpointed outside the app DB
    (the data dir's ``audit.head`` and the scheduled ``audit-checkpoint`` workflow's last result): an
    edited, forged or deleted event (the newest ones and all of them included) is reported with its
    sequence number."""
    return await audit.verify(client, settings, admin)

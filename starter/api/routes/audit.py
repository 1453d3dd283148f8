"""/api/audit: read the audit log (as JSON, or as CSV to download), and check that nobody edited, removed or
forged any of it (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import audit
from starter.services.audit import CSV_FILE, AuditCheck, AuditOut
from starter.services.fields import MAX_ID, Email, Moment, Name, RolePath

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=responses(401, 403))

Target = Annotated[RolePath | None, Query(description="Only events about this target.")]
Actor = Annotated[Email | None, Query(description="Only events by this person.")]
Action = Annotated[Name | None, Query(description="Only events of this action.")]
Since = Annotated[Moment | None, Query(description="Only events at or after this time (UTC unless it says).")]
Until = Annotated[Moment | None, Query(description="Only events before this time (UTC unless it says).")]


@router.get("", responses=responses(422))
def list_audit(
    admin: AdminUser,
    settings: SettingsDep,
    target: Target = None,
    actor: Actor = None,
    action: Action = None,
    since: Since = None,
    until: Until = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only events older than this id: the next page after it.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditOut]:
    """Audit events, newest first (admins). Page through a long log with ``before`` = the last ``id`` seen."""
    return audit.list_events(
        settings, admin, target=target, actor=actor, action=action, since=since, until=until, before=before, limit=limit
    )


@router.get(
    ".csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The events as CSV."}, **responses(422)},
)
def export_audit(
    admin: AdminUser,
    settings: SettingsDep,
    target: Target = None,
    actor: Actor = None,
    action: Action = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000_000, description="Only the newest this many.")] = None,
) -> StreamingResponse:
    """The audit events ``GET /api/audit`` lists for the same filters, all of them (or the newest ``limit``),
    newest first, as a CSV file to download (admins): columns ``id``, ``at``, ``actor``, ``action``, ``target``,
    ``reason``, ``details`` (JSON), ``key_id``. Every cell is quoted, and a cell that would start a spreadsheet
    formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return first) starts with ``'`` instead."""
    rows = audit.audit_csv(
        settings, admin, target=target, actor=actor, action=action, since=since, until=until, limit=limit
    )
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{CSV_FILE}"', "Cache-Control": "no-store"},
    )


@router.get("/verify")
async def verify(admin: AdminUser, settings: SettingsDep, client: ClientDep) -> AuditCheck:
    """Check every event's MAC and link, and that the log reaches the heads checkpointed outside the app DB
    (the data dir's ``audit.head`` and the scheduled ``audit-checkpoint`` workflow's last result): an
    edited, forged or deleted event (the newest ones and all of them included) is reported with its
    sequence number."""
    return await audit.verify(client, settings, admin)

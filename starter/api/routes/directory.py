"""/api/directory/sync: run the directory sync now, and see how its last run went (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

from access.db import session_scope
from access.tables import SyncState
from starter.api.deps import ClientDep, CurrentUser, SettingsDep, require_admin
from starter.api.problems import Problem
from starter.syncs import trigger_sync
from workflows import names

router = APIRouter(prefix="/api/directory", tags=["directory"])


class SyncStateOut(BaseModel):
    name: str
    started_at: datetime | None
    """When the last run started; ``null`` if none has yet."""
    finished_at: datetime | None
    """``null`` while a run is going."""
    summary: dict[str, Any]
    """The last successful run: counts and lists of joiners, movers, leavers, and the requests it acts on."""
    error: str | None
    """Why the last run failed; ``null`` once one succeeds."""


class SyncTriggered(BaseModel):
    triggered: bool
    schedule: str


@router.post("/sync", status_code=202)
async def sync_now(user: CurrentUser, client: ClientDep) -> SyncTriggered:
    """Run the directory sync now, through its schedule (one run at a time, at most one more waiting)."""
    require_admin(user)
    try:
        await trigger_sync(client, names.DIRECTORY_SYNC)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise Problem(409, "the directory sync has no schedule yet: it is created when the API starts") from None
        raise
    return SyncTriggered(triggered=True, schedule=names.DIRECTORY_SYNC)


@router.get("/sync")
def sync_state(user: CurrentUser, settings: SettingsDep) -> SyncStateOut:
    """The directory sync's last run: when it started and finished, what it found, or why it failed."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        state = session.get(SyncState, names.DIRECTORY_SYNC) or SyncState(name=names.DIRECTORY_SYNC)
    return SyncStateOut.model_validate(state, from_attributes=True)

"""/api/directory/sync: run the directory sync now, and see how its last run went (admins)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from access.db import session_scope
from access.tables import SyncState
from starter.api.deps import ClientDep, CurrentUser, SettingsDep, require_admin
from starter.syncs import SyncStateOut, trigger_now
from workflows import names

router = APIRouter(prefix="/api/directory", tags=["directory"])


class SyncTriggered(BaseModel):
    triggered: bool
    schedule: str


@router.post("/sync", status_code=202)
async def sync_now(user: CurrentUser, settings: SettingsDep, client: ClientDep) -> SyncTriggered:
    """Run the directory sync now, through its schedule (one run at a time, at most one more waiting)."""
    require_admin(user)
    await trigger_now(client, settings, names.DIRECTORY_SYNC)
    return SyncTriggered(triggered=True, schedule=names.DIRECTORY_SYNC)


@router.get("/sync")
def sync_state(user: CurrentUser, settings: SettingsDep) -> SyncStateOut:
    """The directory sync's last run: when it started and finished, what it found, or why it failed."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        return SyncStateOut.of(session.get(SyncState, names.DIRECTORY_SYNC), names.DIRECTORY_SYNC)

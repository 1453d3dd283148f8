"""/api/directory: run the directory sync now, see how its last run went, list the groups by source (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import directory
from starter.services.directory import GroupOut, SyncTriggered
from starter.services.fields import Name
from starter.services.syncs import SyncStateOut

router = APIRouter(prefix="/api/directory", tags=["directory"], responses=responses(401, 403))


@router.post("/sync", status_code=202, responses=responses(413, 503))
async def sync_now(admin: AdminUser, settings: SettingsDep, client: ClientDep) -> SyncTriggered:
    """Run the directory sync now, through its schedule (one run at a time, at most one more waiting)."""
    return await directory.sync_now(client, settings, admin)


@router.get("/sync")
def sync_state(admin: AdminUser, settings: SettingsDep) -> SyncStateOut:
    """The directory sync's last run: when it started and finished, what it found, or why it failed."""
    return directory.last_sync(settings, admin)


@router.get("/groups")
def list_groups(
    admin: AdminUser,
    settings: SettingsDep,
    source: Annotated[Name | None, Query(description="Only this source's groups (`file` or an integration).")] = None,
    name: Annotated[Name | None, Query(description="Only groups of this name, from every source.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[GroupOut]:
    """Groups by source, with the reference that names each (policies refer to groups by reference)."""
    return directory.list_groups(settings, admin, source=source, name=name, limit=limit)

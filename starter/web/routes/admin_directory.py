"""Admin: the directory (``/admin/directory``): how its sync last ran and when it runs next, a sync now, and the
groups it knows by source, with the reference a birthright policy names each by.

Over the same services as ``/api/directory`` (``starter.services.directory``), which check the caller is an
admin themselves. The sync's state polls, so a run started here shows running, then done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from starter.api.deps import ClientDep, SettingsDep
from starter.services import directory
from starter.services.syncs import SyncStateOut
from starter.web.rendering import PageAdmin, PageRoute, render, unchanged, version
from store.settings import Settings

router = APIRouter(prefix="/admin/directory", route_class=PageRoute, include_in_schema=False)

GROUPS_SHOWN = 500
"""Groups listed on the page (by name); ``GET /api/directory/groups`` pages through more."""
LIVE_URL = "/admin/directory/live"


def _sync_view(settings: Settings, state: SyncStateOut, next_run: datetime | None) -> dict[str, Any]:
    """The sync's last run and next one, as ``fragments/admin_sync_live.html`` shows them."""
    return {
        "state": state,
        "next_run": next_run,
        "every": settings.directory_sync_every,
        "live_url": LIVE_URL,
        "version": version(state, next_run),
    }


@router.get("", response_class=HTMLResponse)
async def directory_page(
    request: Request, admin: PageAdmin, settings: SettingsDep, client: ClientDep, synced: bool = False
) -> HTMLResponse:
    groups = directory.list_groups(settings, admin, source=None, name=None, limit=GROUPS_SHOWN + 1)
    state = directory.last_sync(settings, admin)
    next_run = await directory.next_sync(client, settings, admin)
    return render(
        request,
        "admin_directory.html",
        groups=groups[:GROUPS_SHOWN],
        more_groups=len(groups) > GROUPS_SHOWN,
        notice="The directory sync was started: its run shows below." if synced else None,
        **_sync_view(settings, state, next_run),
    )


@router.get("/live", response_model=None)
async def directory_live(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The sync's last run, or 204 while it is what the page shows (``v``)."""
    state = directory.last_sync(settings, admin)
    view = _sync_view(settings, state, await directory.next_sync(client, settings, admin))
    if (same := unchanged(v, str(view["version"]))) is not None:
        return same
    return render(request, "fragments/admin_sync_live.html", **view)


@router.post("/sync")
async def sync_now(admin: PageAdmin, settings: SettingsDep, client: ClientDep) -> RedirectResponse:
    """Run the directory sync now, as ``POST /api/directory/sync`` does."""
    await directory.sync_now(client, settings, admin)
    return RedirectResponse("/admin/directory?synced=true#sync", status_code=303)

"""Admin: permissions (``/admin/grants``): every active grant, filtered, sorted and paged; revoke one, or select
several, see what revoking them would do, and revoke them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import Field

from access.grants import GrantPath
from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.services import grants, permissions
from starter.services.fields import MAX_ID, Cursor, Email, FreeText, Name, RolePath
from starter.services.permissions import MAX_SELECTION, Effect, GrantFilter, SortKey
from starter.web.rendering import PageAdmin, PageRoute, render

router = APIRouter(prefix="/admin", route_class=PageRoute, include_in_schema=False)

GrantIds = Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Form(alias="grant_id")]
"""The grants ticked in the table (``grant_id``, once per grant)."""


@router.get("/grants", response_class=HTMLResponse)
def grants_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    user: Annotated[Email, Query()] = "",
    integration: Annotated[Name, Query()] = "",
    resource: Annotated[RolePath, Query()] = "",
    role: Annotated[RolePath, Query()] = "",
    path: Annotated[Name, Query()] = "",
    expiring_before: Annotated[Name, Query()] = "",
    sort: Annotated[SortKey, Query()] = SortKey.SINCE,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    cursor: Annotated[Cursor, Query()] = "",
    revoked: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    held: bool = False,
    returns: bool = False,
) -> HTMLResponse:
    asked = {
        "user": user,
        "integration": integration,
        "resource": resource,
        "role": role,
        "path": path,
        "expiring_before": expiring_before,
    }
    filters = GrantFilter.asked(**asked)
    page = permissions.list_permissions(
        settings, admin, filters, sort=sort, descending=order == "desc", cursor=cursor or None
    )
    kept = {k: v.strip() for k, v in asked.items() if v.strip()}
    if sort is not SortKey.SINCE or order != "asc":
        kept |= {"sort": sort.value, "order": order}
    next_url = f"/admin/grants?{urlencode({**kept, 'cursor': page.next_cursor})}" if page.next_cursor else None
    return render(
        request,
        "grants.html",
        page=page,
        asked=asked,
        expiring_value=_local(filters.expiring_before),
        filtered=any(asked.values()),
        sort=sort,
        order=order,
        sorts=list(SortKey),
        paths=list(GrantPath),
        next_url=next_url,
        first_url=f"/admin/grants?{urlencode(kept)}" if cursor else None,
        max_selection=MAX_SELECTION,
        notice=_revoked(revoked, held=held, returns=returns),
    )


@router.post("/grants/{grant_id}/revoke")
async def revoke(
    grant_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    admin: PageAdmin,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """End a grant through the same path as ``POST /api/grants/{id}/revoke``."""
    result = await grants.revoke_grant(client, settings, admin, grant_id, comment=comment, sign_in=sign_in)
    said = {"revoked": grant_id, "held": int(result.still_held), "returns": int(result.returns_on_sync)}
    return RedirectResponse(f"/admin/grants?{urlencode(said)}", status_code=303)


@router.post("/grants/impact", response_class=HTMLResponse)
def impact_page(request: Request, admin: PageAdmin, settings: SettingsDep, grant_ids: GrantIds = []) -> HTMLResponse:  # noqa: B006 (FastAPI copies defaults)
    """What revoking the ticked grants would do, grant by grant, and the form that does it."""
    impact = permissions.impact(settings, admin, grant_ids)
    return render(request, "grants_impact.html", impact=impact, Effect=Effect)


@router.post("/grants/revoke-selected", response_class=HTMLResponse)
async def revoke_selected(
    request: Request,
    admin: PageAdmin,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    grant_ids: GrantIds = [],  # noqa: B006 (FastAPI copies defaults)
    comment: Annotated[FreeText, Form()] = "",
) -> HTMLResponse:
    """Revoke the grants confirmed on the impact page, each through the single revoke's path; what became of each."""
    outcomes = await permissions.revoke_selected(client, settings, admin, grant_ids, comment=comment, sign_in=sign_in)
    return render(request, "grants_revoked.html", outcomes=outcomes, comment=comment)


def _local(moment: datetime | None) -> str:
    """A moment as a ``datetime-local`` field shows it (UTC, as every time on the pages is)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment is not None else ""


def _revoked(grant_id: int | None, *, held: bool, returns: bool) -> str | None:
    if grant_id is None:
        return None
    said = f"Grant {grant_id} was revoked."
    if held:
        said += " Another active grant still covers the same account and role, so the access stays."
    if returns:
        said += " It is a birthright grant: the next birthright sync grants it again unless its policy changes."
    return said

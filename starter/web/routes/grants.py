"""Admin: permissions (``/admin/grants``): every active grant, filtered by user, role and path, paged; revoke one."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from access.grants import GrantPath
from starter.api.deps import ClientDep, SettingsDep
from starter.services import grants
from starter.services.fields import MAX_ID, Email, FreeText, RolePath
from starter.services.permissions import GrantFilter, list_permissions
from starter.web.rendering import PageAdmin, PageRoute, render

router = APIRouter(prefix="/admin", route_class=PageRoute, include_in_schema=False)


@router.get("/grants", response_class=HTMLResponse)
def grants_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    user: Annotated[Email, Query()] = "",
    role: Annotated[RolePath, Query()] = "",
    path: Annotated[GrantPath | None, Query()] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    revoked: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    held: bool = False,
    returns: bool = False,
) -> HTMLResponse:
    filters = GrantFilter(user=user or None, role=role or None, path=path)
    page = list_permissions(settings, admin, filters, after=after)
    kept = {k: v for k, v in {"user": user, "role": role, "path": path.value if path else ""}.items() if v}
    next_url = f"/admin/grants?{urlencode({**kept, 'after': page.next_after})}" if page.next_after else None
    return render(
        request,
        "grants.html",
        page=page,
        filters=filters,
        paths=list(GrantPath),
        next_url=next_url,
        first_url=f"/admin/grants?{urlencode(kept)}" if after else None,
        notice=_revoked(revoked, held=held, returns=returns),
    )


@router.post("/grants/{grant_id}/revoke")
async def revoke(
    grant_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """End a grant through the same path as ``POST /api/grants/{id}/revoke``."""
    result = await grants.revoke_grant(client, settings, admin, grant_id, comment=comment)
    said = {"revoked": grant_id, "held": int(result.still_held), "returns": int(result.returns_on_sync)}
    return RedirectResponse(f"/admin/grants?{urlencode(said)}", status_code=303)


def _revoked(grant_id: int | None, *, held: bool, returns: bool) -> str | None:
    if grant_id is None:
        return None
    said = f"Grant {grant_id} was revoked."
    if held:
        said += " Another active grant still covers the same account and role, so the access stays."
    if returns:
        said += " It is a birthright grant: the next birthright sync grants it again unless its policy changes."
    return said

"""My access (``/access``): what I hold and until when, my requests; extend, give back, withdraw, and a
grant's one-time login shown once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from access.durations import parse_duration
from access.errors import Refusal, RefusalKind
from access.requests import RequestState
from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.services import credentials, grants, requests
from starter.services.fields import FreeText, Name
from starter.services.my_access import my_access
from starter.web.rendering import PageRoute, PageUser, render, unchanged, version

router = APIRouter(route_class=PageRoute, include_in_schema=False)

RequestId = Name
Comment = Annotated[FreeText, Form()]


def _page(request: Request, user: PageUser, settings: SettingsDep, template: str, seen: str | None) -> Response:
    mine = my_access(settings, user)
    current = version(mine)
    if (same := unchanged(seen, current)) is not None:
        return same
    by_request = {status.id: status for status in mine.requests}
    return render(
        request,
        template,
        mine=mine,
        by_request=by_request,
        open_requests=[s for s in mine.requests if not s.state.ended and s.state is not RequestState.ACTIVE],
        version=current,
        active=RequestState.ACTIVE,
        pending=RequestState.PENDING,
    )


@router.get("/access", response_class=HTMLResponse)
def access_page(request: Request, user: PageUser, settings: SettingsDep) -> Response:
    return _page(request, user, settings, "access.html", None)


@router.get("/access/live", response_model=None)
def access_live(
    request: Request, user: PageUser, settings: SettingsDep, v: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """The page's live part, or 204 while it is what the page shows (``v``)."""
    return _page(request, user, settings, "fragments/access_live.html", v)


@router.post("/access/{request_id}/extend")
async def extend(
    request_id: RequestId,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    duration: Annotated[str, Form(max_length=64)],
    justification: Comment = "",
) -> RedirectResponse:
    try:
        more = parse_duration(duration)
    except ValueError as error:
        raise Refusal(RefusalKind.INVALID, f"duration: {error}", field="duration") from None
    await requests.extend(
        client, settings, user, request_id, duration=more, justification=justification, sign_in=sign_in
    )
    return RedirectResponse(f"/requests/{request_id}?done=extended", status_code=303)


@router.post("/access/{request_id}/give-back")
async def give_back(
    request_id: RequestId,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    comment: Comment = "",
) -> RedirectResponse:
    """The holder gives their access back; an admin ends someone else's grant (from the request's page)."""
    status = await grants.revoke_request_grant(
        client, settings, user, request_id, comment=comment or "given back", sign_in=sign_in
    )
    done = "given-back" if status.requester == user.email else "revoked"
    return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)


@router.post("/access/{request_id}/cancel")
async def cancel(
    request_id: RequestId,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    comment: Comment = "",
) -> RedirectResponse:
    """The requester withdraws their pending request; an admin ends someone else's (from the request's page)."""
    status = await requests.cancel(client, settings, user, request_id, comment=comment, sign_in=sign_in)
    done = "cancelled" if status.requester == user.email else "ended"
    return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)


@router.post("/access/{request_id}/credentials", response_class=HTMLResponse)
def show_credentials(request: Request, request_id: RequestId, user: PageUser, settings: SettingsDep) -> HTMLResponse:
    """The grant's one-time login, shown on this page once (410 after); never cached (``render``)."""
    shown = credentials.show_credentials(settings, user, request_id)
    return render(request, "credentials.html", request_id=request_id, shown=shown)

"""Break-glass in the web UI: a reviewer's confirm or condemn on the request page, and the admins' list of every
emergency grant (``/admin/break-glass``), flagged ones first. The same services as the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from access.break_glass import Verdict
from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.services import break_glass
from starter.services.fields import FreeText, Name
from starter.web.rendering import PageAdmin, PageRoute, PageUser, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.post("/requests/{request_id}/break-glass-review")
async def review(
    request_id: Name,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    verdict: Annotated[Verdict, Form()],
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """Confirm or condemn an emergency grant, then show its request."""
    await break_glass.review(client, settings, user, request_id, verdict=verdict, comment=comment, sign_in=sign_in)
    done = "confirmed" if verdict is Verdict.CONFIRM else "condemned"
    return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)


@router.get("/admin/break-glass", response_class=HTMLResponse)
def admin_break_glass(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    flagged: Annotated[bool, Query()] = False,
) -> Response:
    """Every emergency grant with its review: condemned and unreviewed ones first, then open ones."""
    reviews = break_glass.list_reviews(settings, admin, flagged_only=flagged, limit=break_glass.MAX_LIST)
    return render(request, "admin_break_glass.html", reviews=reviews, flagged=flagged)

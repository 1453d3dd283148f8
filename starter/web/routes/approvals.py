"""Approvals (``/approvals``): what I can decide now, oldest first, a page of cards at a time; approve or deny
with a comment.

The list polls: a decision someone else made (or a new request) shows within a few seconds, and a
comment being typed survives the refresh (``hx-preserve``).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.services import requests
from starter.services.approvals import approval_cards
from starter.services.fields import FreeText, Name
from starter.web.rendering import PageRoute, PageUser, render, unchanged, version

router = APIRouter(route_class=PageRoute, include_in_schema=False)

After = Annotated[Name | None, Query(description="Show the requests after this one (the last page's last).")]


def _page(
    request: Request, user: PageUser, settings: SettingsDep, template: str, seen: str | None, after: str | None
) -> Response:
    page = approval_cards(settings, user, after=after)
    current = version(page)
    if (same := unchanged(seen, current)) is not None:
        return same
    return render(
        request,
        template,
        cards=page.cards,
        version=current,
        after=after,
        live_url=f"/approvals/live?{urlencode({'v': current, **({'after': after} if after else {})})}",
        next_url=f"/approvals?{urlencode({'after': page.next_after})}" if page.next_after else None,
    )


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, user: PageUser, settings: SettingsDep, after: After = None) -> Response:
    return _page(request, user, settings, "approvals.html", None, after)


@router.get("/approvals/live", response_model=None)
def approvals_live(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
    after: After = None,
) -> Response:
    """The cards, or 204 while they are what the page shows (``v``)."""
    return _page(request, user, settings, "fragments/approvals_live.html", v, after)


@router.post("/approvals/{request_id}")
async def decide(
    request_id: Name,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
    decision: Annotated[Literal["approve", "deny"], Form()],
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """Approve or deny the open step (or a pending extension's), then show the request."""
    approved = decision == "approve"
    await requests.decide(client, settings, user, request_id, approved=approved, comment=comment, sign_in=sign_in)
    done = "approved" if approved else "denied"
    return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)

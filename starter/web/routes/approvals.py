"""Approvals (``/approvals``): what I can decide now, oldest first; approve or deny with a comment.

The list polls: a decision someone else made (or a new request) shows within a few seconds, and a
comment being typed survives the refresh (``hx-preserve``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from starter.api.deps import ClientDep, SettingsDep
from starter.services import requests
from starter.services.fields import FreeText, Name
from starter.web.rendering import PageRoute, PageUser, render, unchanged, version

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _page(request: Request, user: PageUser, settings: SettingsDep, template: str, seen: str | None) -> Response:
    waiting = requests.awaiting_decision(settings, user)
    current = version(*waiting)
    if (same := unchanged(seen, current)) is not None:
        return same
    return render(request, template, waiting=waiting, version=current)


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, user: PageUser, settings: SettingsDep) -> Response:
    return _page(request, user, settings, "approvals.html", None)


@router.get("/approvals/live", response_model=None)
def approvals_live(
    request: Request, user: PageUser, settings: SettingsDep, v: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """The cards, or 204 while they are what the page shows (``v``)."""
    return _page(request, user, settings, "fragments/approvals_live.html", v)


@router.post("/approvals/{request_id}")
async def decide(
    request_id: Name,
    user: PageUser,
    settings: SettingsDep,
    client: ClientDep,
    decision: Annotated[Literal["approve", "deny"], Form()],
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """Approve or deny the open step (or a pending extension's), then show the request."""
    approved = decision == "approve"
    await requests.decide(client, settings, user, request_id, approved=approved, comment=comment)
    done = "approved" if approved else "denied"
    return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)

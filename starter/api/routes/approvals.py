"""GET /api/approvals: the requests and extensions the caller can decide now, oldest first, a page at a time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from access.requests import RequestStatus
from starter.api.deps import CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import requests
from starter.services.fields import Name

router = APIRouter(prefix="/api/approvals", tags=["approvals"], responses=responses(401, 422))


NEXT_PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Link": {
                "description": 'The next page, when more follow: `</api/approvals?limit=100&after=…>; rel="next"`',
                "schema": {"type": "string"},
            }
        }
    }
}


@router.get("", responses=NEXT_PAGE)
def list_approvals(
    request: Request,
    response: Response,
    user: CurrentUser,
    settings: SettingsDep,
    limit: Annotated[
        int, Query(ge=1, le=requests.MAX_APPROVALS_PAGE, description="How many requests to list.")
    ] = requests.APPROVALS_PAGE,
    after: Annotated[Name | None, Query(description="List the requests after this one (a page's last).")] = None,
) -> list[RequestStatus]:
    """Pending requests, and pending extensions of active grants, awaiting your decision: the oldest first.

    When more follow, a ``Link: <...>; rel="next"`` header gives the URL of the next page."""
    page = requests.awaiting_decision(settings, user, after=after, limit=limit)
    if page.next_after is not None:
        following = request.url.include_query_params(limit=limit, after=page.next_after)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return page.requests

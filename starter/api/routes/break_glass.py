"""Break-glass reviews: confirm or condemn an emergency grant afterwards; the admins' list of every one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from access.break_glass import BreakGlassReview, Verdict
from access.types import Model
from starter.api.deps import AdminUser, CallerSignIn, ClientDep, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import break_glass
from starter.services.fields import FreeText, Name

router = APIRouter(tags=["break-glass"], responses=responses(401, 413, 422))


class ReviewVerdict(Model):
    verdict: Verdict
    """``confirm`` (the emergency was real) or ``condemn`` (it was not: the grant is revoked at once)."""
    comment: FreeText = ""
    """Why; required to condemn."""


@router.post("/api/requests/{request_id}/break-glass-review", responses=responses(403, 404, 409, 503))
async def review_break_glass(
    request_id: Annotated[Name, Path(description="The emergency request's id.")],
    body: ReviewVerdict,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> BreakGlassReview:
    """Confirm or condemn an emergency (break-glass) grant: one of the approvers its normal rule would have asked,
    or an admin; never its requester. Condemning needs a comment, flags it, tells the security group and the
    requester's manager, and revokes the grant at once. Confirming under an approval workflow that says
    `reauthenticate_within` needs a sign-in that recent, as approving does."""
    return await break_glass.review(
        client, settings, user, request_id, verdict=body.verdict, comment=body.comment, sign_in=sign_in
    )


@router.get("/api/requests/{request_id}/break-glass-review", responses=responses(403, 404))
def get_break_glass_review(
    request_id: Annotated[Name, Path(description="The request's id.")], user: CurrentUser, settings: SettingsDep
) -> BreakGlassReview | None:
    """An emergency request's review (`null` for a request that is no emergency), for whoever may see the request."""
    return break_glass.get_review(settings, user, request_id)


@router.get("/api/break-glass")
def list_break_glass(
    admin: AdminUser,
    settings: SettingsDep,
    flagged: Annotated[bool, Query(description="Only condemned and unreviewed ones.")] = False,
    limit: Annotated[int, Query(ge=1, le=break_glass.MAX_LIST)] = 100,
) -> list[BreakGlassReview]:
    """Every emergency grant with its review state (admins): flagged ones (condemned, unreviewed) first, then
    open ones, newest first."""
    return break_glass.list_reviews(settings, admin, flagged_only=flagged, limit=limit)

"""/api/reviews: access review definitions and campaigns (admins), reviewing one's items (every reviewer), and a
campaign's report (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from access.grants import GrantPath
from access.reviews import CampaignState, ReviewDefinition, ReviewPreview
from starter.api.deps import AdminUser, CallerSignIn, ClientDep, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import review_campaigns, review_decisions, review_items, review_report, reviews
from starter.services.fields import MAX_ID, Email, Name, RolePath
from starter.services.review_campaigns import CampaignDetail, CampaignOut
from starter.services.review_decisions import DraftIn, ReassignIn, SubmitIn, Submitted
from starter.services.review_items import MAX_PAGE, PAGE, CampaignOfMine, Group, ItemOut, ItemsPage, Shown
from starter.services.reviews import CampaignStarted, DefinitionOut

router = APIRouter(prefix="/api/reviews", tags=["reviews"], responses=responses(401, 403, 422))

NameParam = Annotated[Name, Path(description="The definition's name.")]
CampaignParam = Annotated[Name, Path(description="The campaign's id (`<definition>-<YYYYMMDDTHHMMSS>`).")]
ItemParam = Annotated[int, Path(ge=1, le=MAX_ID, description="The item's id.")]


class Deleted(BaseModel):
    deleted: str
    notes: list[str]


# --- definitions (admins) -----------------------------------------------------------------------


@router.get("/definitions")
def list_definitions(admin: AdminUser, settings: SettingsDep) -> list[DefinitionOut]:
    """The review definitions, by name."""
    return reviews.list_definitions(settings, admin)


@router.post("/definitions", status_code=201, responses=responses(409))
async def create_definition(
    body: ReviewDefinition, admin: AdminUser, settings: SettingsDep, client: ClientDep
) -> DefinitionOut:
    """Add a definition; a recurring one (``schedule``) gets its Temporal Schedule ``review-<name>`` at once."""
    return await reviews.create_definition(client, settings, admin, body)


@router.get("/definitions/{name}", responses=responses(404))
def get_definition(name: NameParam, admin: AdminUser, settings: SettingsDep) -> DefinitionOut:
    return reviews.get_definition(settings, admin, name)


@router.put("/definitions/{name}", responses=responses(404))
async def update_definition(
    name: NameParam, body: ReviewDefinition, admin: AdminUser, settings: SettingsDep, client: ClientDep
) -> DefinitionOut:
    """Replace a definition whole (its schedule follows); campaigns already started keep theirs."""
    return await reviews.update_definition(client, settings, admin, name, body)


@router.delete("/definitions/{name}", responses=responses(404))
async def delete_definition(name: NameParam, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> Deleted:
    """Delete a definition and its schedule; its campaigns, items and reports stay."""
    return Deleted(deleted=name, notes=await reviews.delete_definition(client, settings, admin, name))


@router.post("/preview")
def preview(body: ReviewDefinition, admin: AdminUser, settings: SettingsDep) -> ReviewPreview:
    """What a definition would hold if started now (items, reviewers, by path, items going to the fallback, the
    first few), before it is saved. Saves nothing."""
    return reviews.preview_definition(settings, admin, body)


@router.get("/definitions/{name}/preview", responses=responses(404))
def preview_stored(name: NameParam, admin: AdminUser, settings: SettingsDep) -> ReviewPreview:
    """What a stored definition would hold if started now."""
    return reviews.preview_stored(settings, admin, name)


@router.post("/definitions/{name}/start", status_code=201, responses=responses(404, 409, 503))
async def start(name: NameParam, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> CampaignStarted:
    """Start a campaign of the definition now; answers once its items are snapshotted (an empty scope gives a
    campaign in state ``empty``, with nothing to review)."""
    return await reviews.start_campaign(client, settings, admin, name)


# --- campaigns (admins) -------------------------------------------------------------------------


@router.get("/campaigns")
def list_campaigns(
    admin: AdminUser,
    settings: SettingsDep,
    definition: Annotated[Name | None, Query(description="Only this definition's.")] = None,
    state: Annotated[CampaignState | None, Query(description="Only campaigns in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=review_campaigns.MAX_LISTED)] = 50,
) -> list[CampaignOut]:
    """The campaigns, newest first, with their items by state and outcome."""
    return review_campaigns.list_campaigns(settings, admin, definition=definition, state=state, limit=limit)


@router.get("/campaigns/{campaign_id}", responses=responses(404))
def get_campaign(campaign_id: CampaignParam, admin: AdminUser, settings: SettingsDep) -> CampaignDetail:
    """A campaign, with each reviewer's progress."""
    return review_campaigns.get_campaign(settings, admin, campaign_id)


@router.post("/campaigns/{campaign_id}/close", responses=responses(404, 409, 503))
async def close(campaign_id: CampaignParam, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> CampaignOut:
    """Close a campaign early: the defaults apply at once to what nobody decided, then the decisions are
    carried out."""
    return await review_campaigns.close_campaign(client, settings, admin, campaign_id)


@router.get(
    "/campaigns/{campaign_id}/report.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The report as CSV."}, **responses(404)},
)
def report_csv(campaign_id: CampaignParam, admin: AdminUser, settings: SettingsDep) -> StreamingResponse:
    """The campaign's report: its scope and reviewers, when it was made and the audit chain's head then, and every
    item with its decision, who made it and when, the comment and, for a revoke, its proof (the revoke's audit
    event, the grant's end). Every cell is quoted; none starts a spreadsheet formula. The last line is the
    SHA-256 of every byte above it, also recorded in the audit log (``review.report``)."""
    pieces = review_report.report_csv(settings, admin, campaign_id)
    return StreamingResponse(
        pieces,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="lapse-review-{campaign_id}.csv"',
            "Cache-Control": "no-store",
        },
    )


# --- reviewing (every reviewer) -------------------------------------------------------------------


@router.get("/mine")
def my_campaigns(user: CurrentUser, settings: SettingsDep) -> list[CampaignOfMine]:
    """The open campaigns you have items to review in, soonest deadline first."""
    return review_items.my_campaigns(settings, user)


@router.get("/items")
def my_items(
    user: CurrentUser,
    settings: SettingsDep,
    group: Annotated[Group, Query(description="Order by the holder (`user`) or by `role`.")] = "user",
    state: Annotated[
        Shown,
        Query(description="`todo` (open or decided: still changeable), `open`, `drafted`, `decided`, `done`, `all`."),
    ] = "todo",
    campaign: Annotated[Name | None, Query(description="Only this campaign's.")] = None,
    holder: Annotated[Email | None, Query(description="Only this person's access.")] = None,
    role: Annotated[RolePath | None, Query(description="Only this role, or roles under this path.")] = None,
    path: Annotated[GrantPath | None, Query(description="Only grants through this path.")] = None,
    after: Annotated[Name | None, Query(description="`next_after` of the page before.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
) -> ItemsPage:
    """Your items to review in open campaigns: who holds which role through which path, since when, until when,
    why, their manager, whether they are still active, when the access was last used ("unknown" where no
    connector can tell). Never your own access."""
    return review_items.my_items(
        settings,
        user,
        group=group,
        shown=state,
        campaign=campaign,
        holder=holder,
        role=role,
        path=path,
        after=after,
        limit=limit,
    )


@router.post("/items/draft", responses=responses(404, 409))
def draft(body: DraftIn, user: CurrentUser, settings: SettingsDep) -> dict[str, int]:
    """Hold a decision (``keep``, or ``revoke`` with a comment) on items, as a draft until you submit; ``null``
    clears the drafts. One comment for every item named."""
    return {"drafted": review_decisions.draft(settings, user, body)}


@router.post("/items/submit", responses=responses(404, 409))
async def submit(
    body: SubmitIn, user: CurrentUser, settings: SettingsDep, client: ClientDep, sign_in: CallerSignIn
) -> Submitted:
    """Submit your drafts (those of ``items``, or all): each becomes a decision, audited, changeable until the
    campaign closes or the item is acted on. Revoking a JIT grant whose request's approval workflow says
    `reauthenticate_within` ends someone else's grant: it needs a browser sign-in that recent (a 401
    `reauthentication-required` problem names where to sign in again; an API token is refused), and short of one
    nothing is recorded."""
    return await review_decisions.submit(client, settings, user, body, sign_in=sign_in)


@router.get("/items/{item_id}/reviewers", responses=responses(404, 409))
def reviewers(item_id: ItemParam, user: CurrentUser, settings: SettingsDep) -> list[str]:
    """Who you may hand the item to."""
    return review_decisions.reviewers_for(settings, user, item_id)


@router.post("/items/{item_id}/reassign", responses=responses(404, 409))
def reassign(item_id: ItemParam, body: ReassignIn, user: CurrentUser, settings: SettingsDep) -> ItemOut:
    """Hand the item to another eligible reviewer (never its holder); they decide it instead."""
    return review_decisions.reassign(settings, user, item_id, body)

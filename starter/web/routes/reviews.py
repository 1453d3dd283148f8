"""Reviews (``/reviews``): the access I am asked to review in open campaigns, grouped by person or by role,
filtered; keep or revoke many at once with one comment (held as drafts), then submit; hand one to another
eligible reviewer.

Over the same services as ``/api/reviews/items`` (``starter.services.review_items`` and ``review_decisions``),
which never show anyone their own access nor let them decide it. Submitting a revoke that needs a recent sign-in
takes the browser to sign in again (``PageRoute``), back to the drafts.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from access.reviews import ItemDecision
from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.services import review_decisions, review_items
from starter.services.fields import MAX_ID, Email, FreeText, Name, RolePath
from starter.services.review_decisions import DraftIn, ReassignIn, SubmitIn
from starter.services.review_items import MAX_BULK, Group, Shown
from starter.web.rendering import PageRoute, PageUser, render

router = APIRouter(prefix="/reviews", route_class=PageRoute, include_in_schema=False)

ItemParam = Annotated[int, Path(ge=1, le=MAX_ID)]
Ids = Annotated[list[int] | None, Form(max_length=MAX_BULK)]


@router.get("", response_class=HTMLResponse)
def reviews_page(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    group: Annotated[Group, Query()] = "user",
    state: Annotated[Shown, Query()] = "todo",
    campaign: Annotated[Name | None, Query()] = None,
    holder: Annotated[Email | None, Query()] = None,
    role: Annotated[RolePath | None, Query()] = None,
    path: Annotated[GrantPath | None, Query()] = None,
    after: Annotated[Name | None, Query()] = None,
    done: Annotated[Name | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    filters = {"group": group, "state": state, "campaign": campaign, "holder": holder, "role": role}
    filters["path"] = path.value if path else None
    page, campaigns = review_items.my_reviews(
        settings, user, group=group, shown=state, campaign=campaign or None, holder=holder or None,
        role=role or None, path=path, after=after,
    )  # fmt: skip
    kept = {key: value for key, value in filters.items() if value}
    return render(
        request,
        "reviews.html",
        page=page,
        campaigns=campaigns,
        filters=filters,
        here=f"/reviews?{urlencode(kept | ({'after': after} if after else {}))}",
        next_url=f"/reviews?{urlencode(kept | {'after': page.next_after})}" if page.next_after else None,
        notice=done,
    )


def _back(to: str) -> str:
    """Back to the page the form was on (its filters and place), never elsewhere."""
    return to if to.startswith("/reviews?") or to == "/reviews" else "/reviews"


@router.post("/decide")
def decide(
    user: PageUser,
    settings: SettingsDep,
    decision: Annotated[Literal["keep", "revoke", "clear"], Form()],
    items: Ids = None,
    comment: Annotated[FreeText, Form()] = "",
    back: Annotated[str, Form(max_length=2000)] = "/reviews",
) -> RedirectResponse:
    """Hold a decision on the chosen items as drafts (one comment for all), as ``POST /api/reviews/items/draft``."""
    if not items:
        raise Refusal(RefusalKind.INVALID, "choose at least one item (its checkbox) first", field="items")
    try:
        body = DraftIn(items=items, decision=None if decision == "clear" else ItemDecision(decision), comment=comment)
    except ValidationError as error:
        raise Refusal(RefusalKind.INVALID, f"items: {error.errors()[0]['msg']}", field="items") from None
    n = review_decisions.draft(settings, user, body)
    said = {"keep": "keep", "revoke": "revoke", "clear": "no draft"}[decision]
    to = _back(back)
    joiner = "&" if "?" in to else "?"
    message = f"{n} item{'s' if n != 1 else ''} drafted as {said}: submit to record the decisions."
    return RedirectResponse(f"{to}{joiner}{urlencode({'done': message})}", status_code=303)


@router.post("/submit")
async def submit(
    user: PageUser,
    settings: SettingsDep,
    client: ClientDep,
    sign_in: CallerSignIn,
    back: Annotated[str, Form(max_length=2000)] = "/reviews",
) -> RedirectResponse:
    """Submit every draft of mine, as ``POST /api/reviews/items/submit``."""
    result = await review_decisions.submit(client, settings, user, SubmitIn(), sign_in=sign_in)
    message = f"{result.decided} decision{'s' if result.decided != 1 else ''} recorded."
    if result.notes:
        message += " They are carried out at the campaign's close."
    to = _back(back)
    joiner = "&" if "?" in to else "?"
    return RedirectResponse(f"{to}{joiner}{urlencode({'done': message})}", status_code=303)


@router.get("/items/{item_id}/reassign", response_class=HTMLResponse)
def reassign_page(request: Request, item_id: ItemParam, user: PageUser, settings: SettingsDep) -> HTMLResponse:
    """Who the item may be handed to, to choose from."""
    item = review_decisions.my_item(settings, user, item_id)
    eligible = review_decisions.reviewers_for(settings, user, item_id)
    return render(request, "reviews_reassign.html", item=item, eligible=eligible)


@router.post("/items/{item_id}/reassign")
def reassign(
    item_id: ItemParam,
    user: PageUser,
    settings: SettingsDep,
    to: Annotated[Email, Form()],
    comment: Annotated[FreeText, Form()] = "",
) -> RedirectResponse:
    """Hand the item to another eligible reviewer, as ``POST /api/reviews/items/{item_id}/reassign``."""
    moved = review_decisions.reassign(settings, user, item_id, ReassignIn(to=to, comment=comment))
    message = f"Item {item_id} ({moved.role} of {moved.user or moved.account}) is now {to}'s to review."
    return RedirectResponse(f"/reviews?{urlencode({'done': message})}", status_code=303)

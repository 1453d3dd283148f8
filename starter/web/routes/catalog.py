"""The catalog (``/``): the roles one may request, filtered; the request form with the policy's dry run."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from access.durations import parse_duration
from access.errors import Refusal, RefusalKind
from access.types import RequestPlan
from starter.api.deps import CallerSignIn, ClientDep, SettingsDep
from starter.api.problems import STATUS
from starter.services import catalog, preview, requests
from starter.services.catalog import CatalogEntry
from starter.services.fields import FreeText, RolePath
from starter.web.rendering import PageRoute, PageUser, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

SUGGESTED_DURATIONS = ("PT15M", "PT1H", "PT4H", "PT8H", "P1D")
Filter = Annotated[RolePath, Query(max_length=200)]


def _matches(entry: CatalogEntry, text: str, sensitivity: str) -> bool:
    haystack = f"{entry.role} {entry.description} {entry.sensitivity}".lower()
    return all(word in haystack for word in text.lower().split()) and sensitivity in ("", entry.sensitivity)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise Refusal(RefusalKind.INVALID, f"duration: {error}", field="duration") from None


@router.get("/", response_class=HTMLResponse)
def catalog_page(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    q: Filter = "",
    sensitivity: Filter = "",
    role: Filter = "",
) -> HTMLResponse:
    """Every role the caller may request, those matching the filter listed; the form preselects ``role``."""
    entries = catalog.list_catalog(settings, user)
    return render(
        request,
        "catalog.html",
        entries=entries,
        shown=[e for e in entries if _matches(e, q, sensitivity)],
        sensitivities=sorted({e.sensitivity for e in entries}),
        q=q,
        sensitivity=sensitivity,
        form={"role": role, "duration": "", "justification": ""},
        suggested=SUGGESTED_DURATIONS,
        error=None,
    )


@router.post("/requests/preview", response_class=HTMLResponse)
async def preview_request(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    role: Annotated[RolePath, Form()] = "",
    duration: Annotated[str, Form(max_length=64)] = "",
    justification: Annotated[FreeText, Form()] = "",
) -> HTMLResponse:
    """The policy's verdict on the form as it stands (an htmx fragment): who would approve, or why not."""
    plan: RequestPlan | None = None
    refusal: Refusal | None = None
    if role and duration.strip():
        try:
            plan = await preview.preview_request(
                settings, user, role=role, duration=_duration(duration), justification=justification
            )
        except Refusal as refused:
            refusal = refused
    return render(request, "fragments/verdict.html", plan=plan, refusal=refusal, role=role)


@router.post("/requests", response_model=None)
async def create_request(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    client: ClientDep,
    sign_in: CallerSignIn,
    role: Annotated[RolePath, Form()],
    duration: Annotated[str, Form(max_length=64)],
    justification: Annotated[FreeText, Form()] = "",
    emergency: Annotated[bool, Form()] = False,
) -> RedirectResponse | HTMLResponse:
    """Submit the request; refused, the form comes back with the reason and what was typed (or, for want of a
    recent sign-in, the browser goes to sign in again and comes back to the form)."""
    try:
        status = await requests.create_request(
            client,
            settings,
            user,
            role=role,
            duration=_duration(duration),
            justification=justification,
            sign_in=sign_in,
            emergency=emergency,
        )
    except Refusal as refusal:
        if refusal.kind is RefusalKind.REAUTHENTICATE:
            raise  # the page route sends the browser to sign in again
        entries = catalog.list_catalog(settings, user)
        return render(
            request,
            "catalog.html",
            status=STATUS[refusal.kind],
            entries=entries,
            shown=entries,
            sensitivities=sorted({e.sensitivity for e in entries}),
            q="",
            sensitivity="",
            form={"role": role, "duration": duration, "justification": justification, "emergency": emergency},
            suggested=SUGGESTED_DURATIONS,
            error=refusal,
        )
    return RedirectResponse(f"/requests/{status.id}?done=requested", status_code=303)

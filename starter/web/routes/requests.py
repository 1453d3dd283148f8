"""A request's page (``/requests/{id}``): status, steps and decisions, the grant's start and end, the audit
timeline, and for admins the run in the Temporal Web UI. The status part polls until the request ends.

It offers what the reader can do to the request now: decide it (an eligible approver), extend it or give it back
(its holder), withdraw it (its requester), end it (an admin). A decision that needed a more recent sign-in comes
back here after it (``reauthenticate_within``), to be made again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from access import names
from access.break_glass import BreakGlassReview, Verdict, VerdictInput, verdict_refusal
from access.requests import ExtensionState, RequestState
from starter.api.deps import SettingsDep
from starter.services.break_glass import stored_review
from starter.services.fields import Name
from starter.services.notifications import notifications_about
from starter.services.timeline import request_timeline
from starter.web.rendering import PageRoute, PageUser, render, unchanged, version
from store.settings import Settings
from store.tables import User

router = APIRouter(route_class=PageRoute, include_in_schema=False)

NOTICES = {
    "requested": "Your request was made.",
    "approved": "You approved it.",
    "denied": "You denied it.",
    "extended": "Your extension was asked for.",
    "given-back": "You gave the access back.",
    "cancelled": "You withdrew the request.",
    "revoked": "You revoked the grant.",
    "ended": "You ended the request.",
    "confirmed": "You confirmed this emergency access.",
    "condemned": "You condemned this emergency access: it is flagged, and its grant revoked.",
}
"""What a page reached after an action says about it (``?done=``); nothing else is ever shown from the URL."""


def temporal_run_url(settings: Settings, request_id: str) -> str:
    """The request's run in the Temporal Web UI (the embedded dev server's, on ``temporal_ui_port``)."""
    namespace, workflow_id = settings.temporal_namespace, names.request_workflow_id(request_id)
    return f"http://localhost:{settings.temporal_ui_port}/namespaces/{namespace}/workflows/{workflow_id}"


def _page(
    request: Request, user: User, settings: Settings, request_id: str, template: str, seen: str | None, notice: str
) -> Response:
    status, events = request_timeline(settings, user, request_id)
    notifications = notifications_about(settings, request_id)  # the timeline checked who may see it
    glass = stored_review(settings, request_id) if status.break_glass is not None else None
    current = version(status, *events, *notifications, glass)
    if (same := unchanged(seen, current)) is not None:
        return same
    last = status.extensions[-1] if status.extensions else None
    return render(
        request,
        template,
        status=200,
        req=status,
        events=events,
        version=current,
        live=not status.state.ended or (glass is not None and not glass.decided_at),
        active=RequestState.ACTIVE,
        pending=RequestState.PENDING,
        pending_extension=last if last is not None and last.state is ExtensionState.PENDING else None,
        temporal_url=temporal_run_url(settings, request_id) if user.is_admin else None,
        notice=NOTICES.get(notice),
        can_decide=status.awaits_decision_from(user.email),
        mine=status.requester == user.email,
        notifications=notifications,
        glass=glass,
        can_review=glass is not None and verdict_refusal(glass, _probe(glass, user)) is None,
    )


def _probe(glass: BreakGlassReview, user: User) -> VerdictInput:
    """A confirm by ``user``: whether they may review the emergency grant now."""
    return VerdictInput(request_id=glass.request_id, actor=user.email, is_admin=user.is_admin, verdict=Verdict.CONFIRM)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(
    request: Request,
    request_id: Name,
    user: PageUser,
    settings: SettingsDep,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    return _page(request, user, settings, request_id, "request.html", None, done)


@router.get("/requests/{request_id}/live", response_model=None)
def request_live(
    request: Request,
    request_id: Name,
    user: PageUser,
    settings: SettingsDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The status part, or 204 while it is what the page shows (``v``)."""
    return _page(request, user, settings, request_id, "fragments/request_live.html", v, "")

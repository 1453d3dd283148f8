"""How the web UI answers: its templates, what every page is given, and refusals shown as pages.

Pages take the API's identity dependencies (``starter.api.deps``) and call the same services; a service's
refusal, a problem only HTTP has (no sign-in) and invalid form input are answered here, as an HTML page
with the status the API would have given, by every route of the UI's routers (``PageRoute``). A decision that
needs a more recent sign-in (``reauthenticate_within``) takes the browser to sign in again instead, and back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.routing import NoMatchFound
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from starter.api.deps import AdminUser, CurrentUser
from starter.api.problems import STATUS, Problem
from starter.services.recent_sign_in import SIGN_IN_PATH
from store.tables import User

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
POLL_SECONDS = 3
"""How often a live region (approvals, a request's status, my access) asks whether anything changed."""

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value is escaped: a justification of <script> shows as text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_environment)


def _when(value: datetime | None) -> str:
    """A moment as people read it, in UTC (the API's times are UTC too)."""
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _duration(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else "standing"


_environment.filters.update(when=_when, iso=_iso, duration=_duration)


def csrf_token(request: Request) -> str:
    """The token a form or an htmx call sends back: set by the CSRF middleware, empty without one."""
    return str(getattr(request.state, "csrf_token", "") or "")


def _url_of(request: Request, name: str) -> str | None:
    """The path of the route called ``name`` (the sign-in's ``login`` and ``logout``), if the app has one."""
    try:
        return str(request.app.url_path_for(name))
    except NoMatchFound:
        return None


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or an htmx fragment), with what every page shows: who is signed in, the CSRF token, the nav.

    Pages are never cached: they show one person's access, and may show a one-time credential.
    """
    values = {
        "request": request,
        "user": getattr(request.state, "page_user", None),
        "csrf_token": csrf_token(request),
        "login_url": _url_of(request, "login"),
        "logout_url": _url_of(request, "logout"),
        "poll_seconds": POLL_SECONDS,
        "notice": None,
        **context,
    }
    response = templates.TemplateResponse(request, template, values, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def version(*parts: Any) -> str:
    """A short fingerprint of what a live region shows: the page's poll sends it back and gets 204 (no swap)
    while it is unchanged, so nothing moves under the reader's cursor until something did change."""
    text = "\x1f".join(part.model_dump_json() if hasattr(part, "model_dump_json") else repr(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unchanged(seen: str | None, current: str) -> Response | None:
    """204 for a poll that already shows ``current``."""
    return Response(status_code=204) if seen == current else None


# --- who is looking --------------------------------------------------------------------------


def _signed_in(request: Request, user: CurrentUser) -> User:
    request.state.page_user = user  # the nav shows who is signed in, error pages included
    return user


PageUser = Annotated[User, Depends(_signed_in)]
"""The signed-in user (the API's ``CurrentUser``), shown in the page's nav."""


def _admin(user: PageUser, admin: AdminUser) -> User:
    return admin


PageAdmin = Annotated[User, Depends(_admin)]
"""The signed-in user, who must be an admin (the API's ``AdminUser``): a 403 page otherwise."""


# --- refusals as pages -----------------------------------------------------------------------


def error_page(request: Request, status: int, message: str, *, field: str | None = None) -> HTMLResponse:
    title = HTTPStatus(status).phrase
    return render(request, "error.html", status=status, status_code=status, title=title, message=message, field=field)


def refusal_page(request: Request, refusal: Refusal) -> HTMLResponse:
    response = error_page(request, STATUS[refusal.kind], refusal.message, field=refusal.field)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def sign_in_again(request: Request, refusal: Refusal) -> Response | None:
    """For a decision that needs a more recent sign-in: a page that takes the browser to sign in again at the
    provider (``max_age``), which sends it back to the request's page to decide there. None for any other refusal.

    A page with ``Refresh``, not a redirect: the refused action was a form's post, and the pages' policy lets a
    form's post (redirects included) reach Lapse alone (``form-action 'self'``), never the provider."""
    url, max_age = refusal.extra.get("reauthenticate_url"), refusal.extra.get("max_age")
    if refusal.kind is not RefusalKind.REAUTHENTICATE or not isinstance(url, str) or not url.startswith(SIGN_IN_PATH):
        return None
    if request.headers.get("HX-Request") == "true":  # htmx navigates there itself
        return Response(status_code=200, headers={"HX-Redirect": url, "Cache-Control": "no-store"})
    window = timedelta(seconds=max_age) if isinstance(max_age, int) else None
    response = render(request, "reauthenticate.html", status=STATUS[refusal.kind], url=url, window=window)
    response.headers["Refresh"] = f"0; url={url}"
    return response


def as_refusal(error: Exception) -> Refusal | None:
    """The refusal an exception from a service or a workflow update stands for, if it is one."""
    if isinstance(error, Refusal):
        return error
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        if isinstance(cause, ApplicationError):
            return Refusal.of_workflow(cause)
        return Refusal(RefusalKind.CONFLICT, str(cause))
    if isinstance(error, RPCError):
        return Refusal(
            RefusalKind.UNAVAILABLE, f"the workflow service is unavailable, try again shortly ({error.message})"
        )
    return None


def _invalid(error: RequestValidationError) -> tuple[str, str | None]:
    first: dict[str, Any] = next(iter(error.errors()), {})
    location = [str(part) for part in first.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header", "cookie"):
        location = location[1:]  # where it came from: the field is what follows
    field = ".".join(location) or None
    message = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    return (f"{field}: {message}" if field else message), field


class PageRoute(APIRoute):
    """A UI route: whatever refuses it (its identity dependency, its form, its service) answers as a page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except Problem as problem:
                return error_page(request, problem.status, problem.detail, field=problem.field)
            except RequestValidationError as error:
                message, field = _invalid(error)
                return error_page(request, 422, message, field=field)
            except (Refusal, WorkflowUpdateFailedError, RPCError) as error:
                refusal = as_refusal(error)
                assert refusal is not None
                return sign_in_again(request, refusal) or refusal_page(request, refusal)

        return page

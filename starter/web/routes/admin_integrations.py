"""Admin: integrations (``/admin/integrations``): each one's status and last discovery, a connection test and a
discovery on demand, and per integration its roles, each with its JIT-only switch.

Over the same services as ``/api/integrations`` (``starter.services.integrations``), which check the caller is
an admin themselves. A test or a discovery runs on a worker and the service waits for it: from htmx the answer
is the result alone (swapped into the page, refusals included: ``data-swap-errors``), from a plain form the
integration's page with the result on it. Each integration's status polls, so a scheduled discovery shows too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from temporalio.service import RPCError

from access.discovery import ConnectionTestResult, DiscoveryResult
from access.errors import Refusal, RefusalKind
from starter.api.deps import ClientDep, SettingsDep
from starter.api.problems import STATUS
from starter.services import integrations
from starter.services.fields import Name, RolePath
from starter.services.integrations import IntegrationOut, RoleOut, RoleUpdate
from starter.web.rendering import PageAdmin, PageRoute, as_refusal, render, unchanged, version

router = APIRouter(prefix="/admin/integrations", route_class=PageRoute, include_in_schema=False)

NameParam = Annotated[Name, Path(description="The integration's name.")]
Seen = Annotated[str | None, Query(max_length=64)]


@dataclass(frozen=True)
class Outcome:
    """What a test or a discovery came to, as the page shows it beside its button."""

    action: Literal["test", "discover"]
    integration: str
    test: ConnectionTestResult | None = None
    discovery: DiscoveryResult | None = None
    refused: str | None = None
    """Why it did not run or did not finish (the service's refusal)."""
    status: int = 200


def _wants_fragment(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _status_version(integration: IntegrationOut) -> str:
    return version(integration)


@router.get("", response_class=HTMLResponse)
def integrations_page(request: Request, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    listed = integrations.list_integrations(settings, admin)
    return render(
        request, "admin_integrations.html", integrations=listed, versions={i.name: _status_version(i) for i in listed}
    )


def _detail(
    request: Request, integration: IntegrationOut, roles: list[RoleOut], *, status: int = 200, **context: Any
) -> HTMLResponse:
    return render(
        request,
        "admin_integration.html",
        status=status,
        integration=integration,
        status_version=_status_version(integration),
        roles=roles,
        **context,
    )


@router.get("/{name}", response_class=HTMLResponse)
def integration_page(
    request: Request,
    name: NameParam,
    admin: PageAdmin,
    settings: SettingsDep,
    changed: Annotated[RolePath, Query()] = "",
    jit_only: bool = False,
) -> HTMLResponse:
    notice = None
    if changed:
        notice = (
            f"{changed} is now JIT-only: only Lapse may grant it, and discovery treats a grant made elsewhere as drift."
            if jit_only
            else f"{changed} is no longer JIT-only: a grant made in the target is recorded as external, not as drift."
        )
    integration = integrations.get_integration(settings, admin, name)
    return _detail(request, integration, integrations.list_roles(settings, admin, name), notice=notice)


@router.get("/{name}/status", response_model=None)
def integration_status(
    request: Request, name: NameParam, admin: PageAdmin, settings: SettingsDep, v: Seen = None
) -> Response:
    """One integration's status and last discovery, or 204 while it is what the page shows (``v``)."""
    integration = integrations.get_integration(settings, admin, name)
    current = _status_version(integration)
    if (same := unchanged(v, current)) is not None:
        return same
    return render(request, "fragments/admin_integration_status.html", i=integration, status_version=current)


def _answer(request: Request, admin: PageAdmin, settings: SettingsDep, outcome: Outcome) -> HTMLResponse:
    """The outcome alone for htmx; else the integration's page with the outcome on it."""
    if _wants_fragment(request):
        return render(request, "fragments/admin_integration_outcome.html", outcome=outcome, status=outcome.status)
    name = outcome.integration
    integration = integrations.get_integration(settings, admin, name)
    roles = integrations.list_roles(settings, admin, name)
    return _detail(request, integration, roles, status=outcome.status, outcome=outcome)


def _refused(action: Literal["test", "discover"], name: str, error: Exception) -> Outcome:
    """The refusal shown beside the button; one about the page itself (no such integration, not an admin) is
    the page's answer instead."""
    refusal = as_refusal(error)
    if refusal is None or refusal.kind in (RefusalKind.NOT_FOUND, RefusalKind.FORBIDDEN):
        raise error
    return Outcome(action, name, refused=refusal.message, status=STATUS[refusal.kind])


@router.post("/{name}/test", response_class=HTMLResponse)
async def run_connection_test(
    request: Request, name: NameParam, admin: PageAdmin, settings: SettingsDep, client: ClientDep
) -> HTMLResponse:
    """Reach the target on a worker, as ``POST /api/integrations/{name}/test`` does, and show what it said."""
    try:
        result = await integrations.run_connection_test(client, settings, admin, name)
    except (Refusal, RPCError) as error:
        return _answer(request, admin, settings, _refused("test", name, error))
    return _answer(request, admin, settings, Outcome("test", name, test=result))


@router.post("/{name}/discover", response_class=HTMLResponse)
async def discover(
    request: Request, name: NameParam, admin: PageAdmin, settings: SettingsDep, client: ClientDep
) -> HTMLResponse:
    """Run discovery now, as ``POST /api/integrations/{name}/discover`` does, and show what it found; one that
    outlasts the wait goes on, and the integration's status shows its end."""
    try:
        result = await integrations.discover(client, settings, admin, name)
    except (Refusal, RPCError) as error:
        return _answer(request, admin, settings, _refused("discover", name, error))
    return _answer(request, admin, settings, Outcome("discover", name, discovery=result))


@router.post("/{name}/jit-only")
def set_jit_only(
    name: NameParam,
    admin: PageAdmin,
    settings: SettingsDep,
    resource: Annotated[Name, Form()],
    role: Annotated[RolePath, Form()],
    jit_only: Annotated[bool, Form()],
) -> RedirectResponse:
    """Mark a role JIT-only or not, as ``PATCH /api/integrations/{name}/roles/{resource}/{role}`` does."""
    changed = integrations.update_role(settings, admin, name, resource, role, RoleUpdate(jit_only=jit_only))
    said = urlencode({"changed": changed.path, "jit_only": str(changed.jit_only).lower()})
    return RedirectResponse(f"/admin/integrations/{name}?{said}#roles", status_code=303)

"""Who may call what: admin-only routes refuse everyone else through the ``AdminUser`` dependency, before
they read a body or reach a service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import pytest_asyncio
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from starter.api import deps
from starter.api.app import create_app
from tests.conftest import make_settings
from tests.web.test_pages import ADMIN_PAGES

ADMIN_ROUTES = [
    ("GET", "/api/audit"),
    ("GET", "/api/audit.csv"),
    ("GET", "/api/audit/verify"),
    ("GET", "/api/birthright/policies"),
    ("POST", "/api/birthright/policies"),
    ("GET", "/api/birthright/policies/{name}"),
    ("PUT", "/api/birthright/policies/{name}"),
    ("DELETE", "/api/birthright/policies/{name}"),
    ("DELETE", "/api/birthright/policies/{name}/exceptions/{exception_id}"),
    ("POST", "/api/birthright/policies/order"),
    ("POST", "/api/birthright/preview"),
    ("POST", "/api/birthright/sync"),
    ("GET", "/api/birthright/sync"),
    ("POST", "/api/directory/sync"),
    ("GET", "/api/directory/sync"),
    ("GET", "/api/directory/groups"),
    ("GET", "/api/integrations"),
    ("POST", "/api/integrations"),
    ("GET", "/api/integrations/{name}"),
    ("POST", "/api/integrations/{name}/test"),
    ("POST", "/api/integrations/{name}/discover"),
    ("GET", "/api/integrations/{name}/roles"),
    ("PATCH", "/api/integrations/{name}/roles/{resource}/{role}"),
    ("GET", "/api/integrations/{name}/grants"),
    ("POST", "/api/grants/{grant_id}/revoke"),
    ("POST", "/api/org"),
    ("GET", "/api/org/open-references"),
    ("POST", "/codec/decode"),
    ("GET", "/api/service-accounts"),
    ("POST", "/api/service-accounts"),
    ("POST", "/api/service-accounts/{email}/tokens"),
    ("DELETE", "/api/service-accounts/{email}"),
    ("GET", "/api/reviews/definitions"),
    ("POST", "/api/reviews/definitions"),
    ("GET", "/api/reviews/definitions/{name}"),
    ("PUT", "/api/reviews/definitions/{name}"),
    ("DELETE", "/api/reviews/definitions/{name}"),
    ("POST", "/api/reviews/preview"),
    ("GET", "/api/reviews/definitions/{name}/preview"),
    ("POST", "/api/reviews/definitions/{name}/start"),
    ("GET", "/api/reviews/campaigns"),
    ("GET", "/api/reviews/campaigns/{campaign_id}"),
    ("POST", "/api/reviews/campaigns/{campaign_id}/close"),
    ("GET", "/api/reviews/campaigns/{campaign_id}/report.csv"),
    ("GET", "/api/break-glass"),
    ("GET", "/api/notifications/settings"),
    ("PUT", "/api/notifications/settings"),
]
"""Every route only admins may call."""

EXAMPLES = {
    "{name}": "ledger",
    "{resource}": "prod-db",
    "{role}": "read",
    "{grant_id}": "1",
    "{email}": "ci@example.com",
    "{campaign_id}": "quarterly-20260101T000000",
}


def _concrete(path: str) -> str:
    for placeholder, value in EXAMPLES.items():
        path = path.replace(placeholder, value)
    return path


@pytest_asyncio.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the demo organisation, with no Temporal behind it: nothing here may get that far."""
    app = create_app(make_settings(tmp_path, "127.0.0.1:1"), client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield client


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p in ADMIN_ROUTES])
async def test_admin_routes_refuse_a_signed_in_non_admin(http: httpx.AsyncClient, method: str, path: str) -> None:
    # No body at all: the caller is refused before a body would be read, so a non-admin learns nothing
    # of what a valid one looks like. (Declared JSON, as API clients do: a form's change would need a CSRF token.)
    headers = {"X-Forwarded-Email": "alan@example.com", "Content-Type": "application/json"}
    response = await http.request(method, _concrete(path), headers=headers)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"] == "only admins can do this"


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES[:3], ids=[f"{m} {p}" for m, p in ADMIN_ROUTES[:3]])
async def test_admin_routes_ask_who_is_calling_first(http: httpx.AsyncClient, method: str, path: str) -> None:
    response = await http.request(method, _concrete(path))
    assert response.status_code == 401 and response.json()["field"] == "X-Forwarded-Email"


ADMIN_CHECK = get_args(deps.AdminUser)[1].dependency
"""What ``AdminUser`` runs."""


def _needs_admin(dependant: Dependant) -> bool:
    return any(d.call is ADMIN_CHECK or _needs_admin(d) for d in dependant.dependencies)


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every operation of the app, through the routers it includes (kept apart by FastAPI since 0.16x)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


def test_exactly_the_admin_routes_depend_on_an_admin(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, "127.0.0.1:1"), client=None)
    guarded = {
        (method, route.path.replace(":path", ""))
        for route in _api_routes(app.routes)
        if _needs_admin(route.dependant)
        for method in route.methods or ()
    }
    assert guarded == set(ADMIN_ROUTES) | set(ADMIN_PAGES)

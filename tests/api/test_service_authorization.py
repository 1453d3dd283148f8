"""The services check who is calling themselves, whichever way they are reached (the API, the CLI's server
side, the web UI): an admin-only service function refuses a non-admin before it does anything, not only
behind the API's ``AdminUser`` dependency; and only an active Lapse user is anybody.

The admin-only functions are found, not listed: every public function of the admin-only service modules,
and every service function an admin-only route (of the API or the web UI) calls. A new one without the
check fails here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlmodel import func, select

from access.errors import Refusal, RefusalKind
from starter.api import deps
from starter.services import (
    audit,
    authorization,
    birthright,
    directory,
    grants,
    integrations,
    review_campaigns,
    reviews,
)
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, User
from tests.conftest import make_settings

ADMIN_MODULES = (audit, birthright, directory, integrations, reviews, review_campaigns)
"""Service modules whose every public function is for admins."""

NOT_CALLER_ACTIONS: set[Callable[..., Any]] = {
    audit.refused,
    reviews.ensure_review_schedules,
    review_campaigns.find_campaign,
}
"""Public functions of those modules no caller invokes: ``refused`` records another service's refusal; the API's
start brings the review schedules up to date; ``find_campaign`` reads a row inside another function's session."""

ROUTE_PACKAGES = ("starter.api.routes", "starter.web.routes")
"""Where the routers are: the API's, and the web UI's pages (whose ``PageAdmin`` runs ``AdminUser``)."""

ROUTES_WITHOUT_A_SERVICE = {"/codec/decode"}
"""Admin-only routes that call no service: decoding payloads for Temporal's Web UI is HTTP's alone."""

ADMIN_CHECK = typing.get_args(deps.AdminUser)[1].dependency
"""What ``AdminUser`` runs."""


def _needs_admin(dependant: Dependant) -> bool:
    return any(d.call is ADMIN_CHECK or _needs_admin(d) for d in dependant.dependencies)


def _admin_routes() -> Iterator[APIRoute]:
    for package in ROUTE_PACKAGES:
        if importlib.util.find_spec(package) is None:
            continue
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}."):
            router = getattr(importlib.import_module(info.name), "router", None)
            for route in router.routes if router is not None else ():
                if isinstance(route, APIRoute) and _needs_admin(route.dependant):
                    yield route


def _services_called(endpoint: Callable[..., Any]) -> set[Callable[..., Any]]:
    """The ``starter.services`` functions ``endpoint``'s body calls (``module.function(...)`` or ``function(...)``)."""
    found: set[Callable[..., Any]] = set()
    scope = endpoint.__globals__  # type: ignore[attr-defined]
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(endpoint)))):
        if not isinstance(node, ast.Call):
            continue
        called: Any = None
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            owner = scope.get(node.func.value.id)
            if isinstance(owner, types.ModuleType):
                called = getattr(owner, node.func.attr, None)
        elif isinstance(node.func, ast.Name):
            called = scope.get(node.func.id)
        if inspect.isfunction(called) and called.__module__.startswith("starter.services."):
            found.add(called)
    return found


def _admin_only() -> list[Callable[..., Any]]:
    functions: set[Callable[..., Any]] = set()
    for module in ADMIN_MODULES:
        functions |= {
            member
            for name, member in inspect.getmembers(module, inspect.isfunction)
            if member.__module__ == module.__name__ and not name.startswith("_") and member not in NOT_CALLER_ACTIONS
        }
    for route in _admin_routes():
        called = _services_called(route.endpoint)
        assert called or route.path in ROUTES_WITHOUT_A_SERVICE, f"{route.path} calls no service: check it"
        functions |= called
    return sorted(functions, key=lambda f: (f.__module__, f.__name__))


ADMIN_ONLY = _admin_only()


def _name(function: Callable[..., Any]) -> str:
    return f"{function.__module__.rsplit('.', 1)[1]}.{function.__name__}"


def test_the_admin_only_functions_are_found() -> None:
    found = {_name(f) for f in ADMIN_ONLY}
    assert {
        "audit.list_events",
        "audit.verify",
        "birthright.create_policy",
        "birthright.preview",
        "directory.list_groups",
        "integrations.create_integration",
        "integrations.update_role",
        "grants.revoke_grant",
    } <= found, found
    assert grants.revoke_request_grant not in ADMIN_ONLY  # the requester's own too


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The demo organisation, with no Temporal behind it: nothing here may get that far."""
    return make_settings(tmp_path, "127.0.0.1:1")


def _user(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
    assert user is not None
    return user


def _audit_events(settings: Settings) -> int:
    with session_scope(settings.db_url, write=False) as session:
        return int(session.exec(select(func.count()).select_from(AuditEvent)).one())


UNUSED = object()
"""Every argument but the caller and the settings: a function that checks its caller first never reads them."""


def _arguments(function: Callable[..., Any], caller: User, settings: Settings) -> dict[str, Any]:
    hints = typing.get_type_hints(function)
    parameters = inspect.signature(function).parameters
    callers = [name for name in parameters if hints.get(name) is User]
    assert len(callers) == 1, f"{_name(function)} must take its caller (one User) to check it: {callers}"
    return {
        name: caller if hints.get(name) is User else settings if hints.get(name) is Settings else UNUSED
        for name in parameters
    }


@pytest.mark.parametrize("function", ADMIN_ONLY, ids=_name)
async def test_an_admin_only_service_refuses_a_non_admin_called_directly(
    settings: Settings, function: Callable[..., Any]
) -> None:
    alan = _user(settings, "alan@example.com")  # signed in and active, not an admin
    arguments = _arguments(function, alan, settings)
    before = _audit_events(settings)
    try:
        result = function(**arguments)
        if inspect.isawaitable(result):
            await result
    except Refusal as refusal:
        assert refusal.kind == RefusalKind.FORBIDDEN, refusal
        assert refusal.message == "only admins can do this"
    except Exception as error:
        pytest.fail(f"{_name(function)} went ahead for a non-admin, without checking the caller: {error!r}")
    else:
        pytest.fail(f"{_name(function)} served a non-admin")
    assert _audit_events(settings) == before


def test_only_a_known_active_user_is_signed_in(settings: Settings) -> None:
    assert authorization.require_active_user(settings, " Alan@Example.COM ").email == "alan@example.com"
    with pytest.raises(Refusal) as unknown:
        authorization.require_active_user(settings, "mallory@example.com", field="X-Forwarded-Email")
    assert unknown.value.kind == RefusalKind.UNAUTHENTICATED
    assert unknown.value.message == "mallory@example.com is not an active Lapse user"
    assert unknown.value.field == "X-Forwarded-Email"

    with session_scope(settings.db_url) as session:
        alan = catalog.find_user(session, "alan@example.com")
        assert alan is not None
        alan.active = False  # a leaver
        session.add(alan)
    with pytest.raises(Refusal) as leaver:
        authorization.require_active_user(settings, "alan@example.com")
    assert leaver.value.kind == RefusalKind.UNAUTHENTICATED

"""The authorization matrix: every route of the app (API and pages, read from its route table) called by every
kind of caller, each answer checked against what this file says the route allows.

A new route fails here until ``MATRIX`` says who may call it. What is checked is the sign-in layer's answer:
401 for nobody, a dead token or session (expired, revoked, its owner deactivated; a session behind the SSO proxy),
403 for a signed-in caller the route refuses (not an admin, not a reader of the request, a token without the
scope or acting without its owner's admin rights, a service account's) and for a browser's change without its
CSRF token, and "let through" otherwise (anything else but a 500: no Temporal answers here, so a call that gets
that far is a 503). The callers sign in through OIDC (sessions, tokens) or, on an app in proxy mode, through
the SSO proxy's header. Whether a decision counts is the workflow's to judge, tested with Temporal in
``test_tokens_api.py`` and ``test_approvals_api.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlmodel import col, update
from starlette.routing import Mount, Route

from access.requests import RequestStatus, StepState, StepStatus
from access.types import Approver, ApproverKind
from starter.services import tokens
from starter.services.tokens import Scope
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, ApiToken, User
from tests.api.identities import (
    Caller,
    client,
    mint,
    offline_app,
    offline_settings,
    proxy_caller,
    session_caller,
    token_caller,
)

REQUEST_ID = "matrixreq01"
"""A pending request of alan's, which linus (his manager) may decide."""


@dataclass(frozen=True)
class Allowed:
    """Who a route lets through: ``who`` is ``public`` (it does not ask), ``user``, ``reader`` (of the request:
    its requester, approvers and admins), ``requester`` (of the request, alone), ``admin``, or ``session``
    (signed in through a browser or the proxy, never a token); ``scope``: what a token needs (None: none may)."""

    who: str
    scope: Scope | str | None = None


PUBLIC = Allowed("public")
ANY_TOKEN = "any"
READ = Allowed("user", Scope.READ)
REQUEST = Allowed("user", Scope.REQUEST)
APPROVE = Allowed("user", Scope.APPROVE)
ADMIN = Allowed("admin", Scope.ADMIN)
READER = Allowed("reader", Scope.READ)
REQUESTER = Allowed("requester", Scope.REQUEST)
SESSION_ONLY = Allowed("session")
SIGNED = Allowed("signed")
"""Authenticated by a signature over the body (Slack's), never by a sign-in or a CSRF token: every caller here,
who signs nothing, is a 401."""
ADMIN_SESSION = Allowed("admin")

MATRIX: dict[tuple[str, str], Allowed] = {
    # Documentation, health, static files, the Temporal Web UI's preflight, signing in and out.
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    # Probes for orchestrators and Prometheus: no sign-in; /metrics by address or its own token (tests/ops).
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/static"): PUBLIC,
    ("OPTIONS", "/codec/{operation}"): PUBLIC,
    ("GET", "/auth/login"): PUBLIC,
    ("GET", "/auth/callback"): PUBLIC,
    ("POST", "/auth/logout"): PUBLIC,
    ("GET", "/auth/signed-out"): PUBLIC,
    # The CLI's sign-in through a browser: the CLI starts and polls it signed in as nobody; a person approves it.
    ("POST", "/auth/device"): PUBLIC,
    ("POST", "/auth/device/token"): PUBLIC,
    # Slack's button clicks: Slack signs them; no person calls it.
    ("POST", "/api/slack/interactions"): SIGNED,
    ("GET", "/device"): READ,
    ("POST", "/device"): SESSION_ONLY,  # approving makes a token: never with a token
    # Requesting and one's own requests.
    ("GET", "/api/catalog"): READ,
    ("POST", "/api/requests"): REQUEST,
    ("GET", "/api/requests"): READ,
    ("GET", "/api/requests/{request_id}"): READER,
    ("POST", "/api/requests/{request_id}/cancel"): REQUEST,
    ("POST", "/api/requests/{request_id}/revoke"): REQUEST,
    ("POST", "/api/requests/{request_id}/extend"): REQUEST,
    ("POST", "/api/requests/{request_id}/credentials"): REQUESTER,
    ("GET", "/api/grants"): READ,
    # Deciding.
    ("GET", "/api/approvals"): READ,
    ("POST", "/api/requests/{request_id}/approve"): APPROVE,
    ("POST", "/api/requests/{request_id}/deny"): APPROVE,
    # Tokens and who am I.
    ("GET", "/api/me"): Allowed("user", ANY_TOKEN),
    ("GET", "/api/tokens"): READ,
    ("POST", "/api/tokens"): SESSION_ONLY,  # a token makes no tokens
    ("DELETE", "/api/tokens/{token_id}"): SESSION_ONLY,  # a token revokes only itself (test_tokens_api)
    ("GET", "/api/service-accounts"): ADMIN,
    ("POST", "/api/service-accounts"): ADMIN,
    ("POST", "/api/service-accounts/{email}/tokens"): Allowed("admin", None),
    ("DELETE", "/api/service-accounts/{email}"): ADMIN,
    # Notifications: the organisation's channels (admins), your own, and who was told what of a request.
    ("GET", "/api/notifications/settings"): ADMIN,
    ("PUT", "/api/notifications/settings"): ADMIN,
    ("GET", "/api/me/notifications"): READ,
    ("PUT", "/api/me/notifications"): REQUEST,
    ("GET", "/api/requests/{request_id}/notifications"): READER,
    # Administration.
    ("POST", "/api/grants/{grant_id}/revoke"): ADMIN,
    ("GET", "/api/integrations"): ADMIN,
    ("POST", "/api/integrations"): ADMIN,
    ("GET", "/api/integrations/{name}"): ADMIN,
    ("POST", "/api/integrations/{name}/test"): ADMIN,
    ("POST", "/api/integrations/{name}/discover"): ADMIN,
    ("GET", "/api/integrations/{name}/roles"): ADMIN,
    ("PATCH", "/api/integrations/{name}/roles/{resource}/{role:path}"): ADMIN,
    ("GET", "/api/integrations/{name}/grants"): ADMIN,
    ("GET", "/api/birthright/policies"): ADMIN,
    ("POST", "/api/birthright/policies"): ADMIN,
    ("GET", "/api/birthright/policies/{name}"): ADMIN,
    ("PUT", "/api/birthright/policies/{name}"): ADMIN,
    ("DELETE", "/api/birthright/policies/{name}"): ADMIN,
    ("DELETE", "/api/birthright/policies/{name}/exceptions/{exception_id}"): ADMIN,
    ("POST", "/api/birthright/policies/order"): ADMIN,
    ("POST", "/api/birthright/preview"): ADMIN,
    ("POST", "/api/birthright/sync"): ADMIN,
    ("GET", "/api/birthright/sync"): ADMIN,
    ("POST", "/api/directory/sync"): ADMIN,
    ("GET", "/api/directory/sync"): ADMIN,
    ("GET", "/api/directory/groups"): ADMIN,
    ("GET", "/api/audit"): ADMIN,
    ("GET", "/api/audit.csv"): ADMIN,
    ("GET", "/api/audit/verify"): ADMIN,
    ("POST", "/codec/decode"): ADMIN,
    ("POST", "/api/org"): ADMIN,
    ("GET", "/api/org/open-references"): ADMIN,
    # Access reviews: definitions and campaigns (admins); reviewing (every reviewer, deciding as approving is).
    ("GET", "/api/reviews/definitions"): ADMIN,
    ("POST", "/api/reviews/definitions"): ADMIN,
    ("GET", "/api/reviews/definitions/{name}"): ADMIN,
    ("PUT", "/api/reviews/definitions/{name}"): ADMIN,
    ("DELETE", "/api/reviews/definitions/{name}"): ADMIN,
    ("POST", "/api/reviews/preview"): ADMIN,
    ("GET", "/api/reviews/definitions/{name}/preview"): ADMIN,
    ("POST", "/api/reviews/definitions/{name}/start"): ADMIN,
    ("GET", "/api/reviews/campaigns"): ADMIN,
    ("GET", "/api/reviews/campaigns/{campaign_id}"): ADMIN,
    ("POST", "/api/reviews/campaigns/{campaign_id}/close"): ADMIN,
    ("GET", "/api/reviews/campaigns/{campaign_id}/report.csv"): ADMIN,
    ("GET", "/api/reviews/mine"): READ,
    ("GET", "/api/reviews/items"): READ,
    ("POST", "/api/reviews/items/draft"): APPROVE,
    ("POST", "/api/reviews/items/submit"): APPROVE,
    ("GET", "/api/reviews/items/{item_id}/reviewers"): READ,
    ("POST", "/api/reviews/items/{item_id}/reassign"): APPROVE,
    # Break-glass: reviewing an emergency grant afterwards (deciding, as approving is; the review says who may), its
    # review on the request (readers), every one (admins).
    ("POST", "/api/requests/{request_id}/break-glass-review"): APPROVE,
    ("GET", "/api/requests/{request_id}/break-glass-review"): READER,
    ("GET", "/api/break-glass"): ADMIN,
    # The web UI.
    ("GET", "/"): READ,
    ("POST", "/requests/preview"): READ,
    ("POST", "/requests"): REQUEST,
    ("GET", "/access"): READ,
    ("GET", "/access/live"): READ,
    ("POST", "/access/{request_id}/extend"): REQUEST,
    ("POST", "/access/{request_id}/give-back"): REQUEST,
    ("POST", "/access/{request_id}/cancel"): REQUEST,
    ("POST", "/access/{request_id}/credentials"): REQUESTER,
    ("GET", "/approvals"): READ,
    ("GET", "/approvals/live"): READ,
    ("POST", "/approvals/{request_id}"): APPROVE,
    ("GET", "/requests/{request_id}"): READER,
    ("GET", "/requests/{request_id}/live"): READER,
    ("POST", "/requests/{request_id}/break-glass-review"): APPROVE,
    ("GET", "/admin/break-glass"): ADMIN,
    ("GET", "/admin/notifications"): ADMIN,
    ("POST", "/admin/notifications/test"): ADMIN,
    ("GET", "/admin/notifications/outbox/{row_id}"): ADMIN,
    ("GET", "/admin/notifications/preview"): ADMIN,
    ("GET", "/admin/notifications/preview/email"): ADMIN,
    ("GET", "/admin/grants"): ADMIN,
    ("POST", "/admin/grants/{grant_id}/revoke"): ADMIN,
    ("POST", "/admin/grants/impact"): ADMIN,
    ("POST", "/admin/grants/revoke-selected"): ADMIN,
    ("GET", "/tokens"): READ,
    ("POST", "/tokens"): SESSION_ONLY,  # a token makes no tokens
    ("POST", "/notifications"): REQUEST,  # your channels, from the settings page's block
    ("POST", "/tokens/{token_id}/revoke"): SESSION_ONLY,
    ("POST", "/admin/service-accounts"): ADMIN,
    ("POST", "/admin/service-accounts/{email}/tokens"): Allowed("admin", None),
    ("POST", "/admin/service-accounts/{email}/deactivate"): ADMIN,
    ("GET", "/admin/integrations"): ADMIN,
    ("GET", "/admin/integrations/{name}"): ADMIN,
    ("GET", "/admin/integrations/{name}/status"): ADMIN,
    ("POST", "/admin/integrations/{name}/test"): ADMIN,
    ("POST", "/admin/integrations/{name}/discover"): ADMIN,
    ("POST", "/admin/integrations/{name}/jit-only"): ADMIN,
    ("GET", "/admin/birthright"): ADMIN,
    ("GET", "/admin/birthright/live"): ADMIN,
    ("POST", "/admin/birthright/sync"): ADMIN,
    ("GET", "/admin/birthright/new"): ADMIN,
    ("GET", "/admin/birthright/policies/{name}"): ADMIN,
    ("POST", "/admin/birthright/preview"): ADMIN,
    ("POST", "/admin/birthright/save"): ADMIN,
    ("POST", "/admin/birthright/policies/{name}/exceptions/{exception_id}/remove"): ADMIN,
    ("GET", "/admin/directory"): ADMIN,
    ("GET", "/admin/directory/live"): ADMIN,
    ("POST", "/admin/directory/sync"): ADMIN,
    ("GET", "/admin/audit"): ADMIN,
    ("GET", "/admin/audit/verify"): ADMIN,
    ("GET", "/admin/audit.csv"): ADMIN,
    ("GET", "/reviews"): READ,
    ("POST", "/reviews/decide"): APPROVE,
    ("POST", "/reviews/submit"): APPROVE,
    ("GET", "/reviews/items/{item_id}/reassign"): READ,
    ("POST", "/reviews/items/{item_id}/reassign"): APPROVE,
    ("GET", "/admin/reviews"): ADMIN,
    ("GET", "/admin/reviews/new"): ADMIN,
    ("GET", "/admin/reviews/definitions/{name}"): ADMIN,
    ("POST", "/admin/reviews/preview"): ADMIN,
    ("POST", "/admin/reviews/save"): ADMIN,
    ("POST", "/admin/reviews/definitions/{name}/start"): ADMIN,
    ("POST", "/admin/reviews/definitions/{name}/delete"): ADMIN,
    ("GET", "/admin/reviews/campaigns/{campaign_id}"): ADMIN,
    ("POST", "/admin/reviews/campaigns/{campaign_id}/close"): ADMIN,
    ("GET", "/admin/reviews/campaigns/{campaign_id}/report"): ADMIN,
    ("GET", "/admin/reviews/campaigns/{campaign_id}/report.csv"): ADMIN,
}

EXAMPLES = {
    "{request_id}": REQUEST_ID,
    "{name}": "ledger",
    "{resource}": "prod-db",
    "{role:path}": "read",
    "{grant_id}": "999999",
    "{email}": "nobody-sa@example.com",
    "{token_id}": "0000000000000000",
    "{operation}": "decode",
    "{item_id}": "999999",
    "{campaign_id}": "nope-20260101T000000",
}

PEOPLE = {
    "requester": "alan@example.com",
    "approver": "linus@example.com",
    "ineligible": "barbara@example.com",
    "admin": "ada@example.com",
}
SESSIONS = dict(PEOPLE)
"""Browsers signed in through OIDC, each call with a new session (``/auth/logout`` ends one) and its CSRF token."""
NO_CSRF = {f"{name} without csrf": email for name, email in PEOPLE.items()}
"""The same browsers leaving the CSRF token out: every change refused (a route that escaped the check shows)."""
PROXIED = {f"proxy {name}": email for name, email in PEOPLE.items()}
"""Browsers behind the SSO proxy (an app in proxy mode), sending the CSRF token their pages carry."""
PROXIED_NO_CSRF = {"proxy admin without csrf": "ada@example.com"}
SERVICE_ACCOUNT = "ci-matrix@example.com"
DEACTIVATED = "dennis@example.com"
TOKENS: dict[str, tuple[str, tuple[str, ...]]] = {
    # linus reads the request (he may decide it); ada is an admin.
    "read token": ("linus@example.com", ("read",)),
    "request token": ("linus@example.com", ("request",)),
    "approve token": ("linus@example.com", ("approve",)),
    "admin token": ("ada@example.com", ("admin",)),
    "admin's token without admin": ("ada@example.com", ("read", "request", "approve")),
    "service account token": (SERVICE_ACCOUNT, ("read", "request", "approve")),
    "expired token": ("ada@example.com", ("read", "request", "approve", "admin")),
    "revoked token": ("ada@example.com", ("read", "request", "approve", "admin")),
    "deactivated user's token": (DEACTIVATED, ("read", "request", "approve")),
}
DEAD = {"anonymous", "expired token", "revoked token", "deactivated user's token", "deactivated user's session"}
"""Callers nobody is signed in as: a 401 wherever it is asked who calls."""
SESSION_BEHIND_PROXY = "session behind the proxy"
"""A live session's cookie sent to the app in proxy mode: only the proxy says who is signed in there."""
CALLERS = [
    "anonymous",
    *SESSIONS,
    *NO_CSRF,
    *TOKENS,
    "deactivated user's session",
    *PROXIED,
    *PROXIED_NO_CSRF,
    SESSION_BEHIND_PROXY,
]
BEHIND_PROXY = {*PROXIED, *PROXIED_NO_CSRF, SESSION_BEHIND_PROXY}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _walk(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        if (included := getattr(route, "original_router", None)) is not None:
            yield from _walk(included.routes)
        else:
            yield route


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers: its API routes, pages, documentation and mounts."""
    found = []
    for route in _walk(app.routes):
        if isinstance(route, Mount):
            found.append(("GET", route.path))
        elif isinstance(route, APIRoute | Route):
            found += [(method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def _app_for_collection() -> FastAPI:
    data = Path(tempfile.mkdtemp(prefix="lapse-matrix-"))
    return offline_app(Settings(_env_file=None, data_dir=data))  # type: ignore[call-arg]


ROUTES = route_table(_app_for_collection())


@dataclass
class World:
    settings: Settings
    http: httpx.AsyncClient
    """The app signing in through OIDC."""
    proxy: httpx.AsyncClient
    """The same app DB's app behind the SSO proxy (``LAPSE_AUTH=proxy``, this address trusted)."""
    callers: dict[str, Caller]
    """The callers made once: tokens, the deactivated user's session, the proxy's."""


@pytest.fixture(scope="module")
def world_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = offline_settings(tmp_path_factory.mktemp("matrix"))
    now = datetime.now(UTC)
    status = RequestStatus(
        id=REQUEST_ID,
        requester="alan@example.com",
        role="ledger/payments-api/deploy",
        duration=timedelta(hours=1),
        justification="the matrix",
        policy="manager-approval",
        rule="manager",
        created_at=now,
        steps=[
            StepStatus(
                name="manager",
                approvers=[Approver(kind=ApproverKind.MANAGER)],
                quorum=1,
                eligible=["linus@example.com"],
                state=StepState.OPEN,
                opened_at=now,
            )
        ],
    )
    with session_scope(settings.db_url) as session:
        session.add(
            AccessRequest(
                id=REQUEST_ID,
                requester=status.requester,
                role=status.role,
                state=status.state.value,
                created_at=now,
                status=status.model_dump(mode="json"),
            )
        )
    return settings


def _service_account(settings: Settings) -> None:
    with session_scope(settings.db_url, write=False) as session:
        ada = catalog.find_user(session, "ada@example.com")
    assert ada is not None
    tokens.create_service_account(settings, ada, tokens.ServiceAccountCreate(email=SERVICE_ACCOUNT, name="CI"))


def _mint(settings: Settings, name: str, owner: str, scopes: tuple[str, ...]) -> Caller:
    if owner != SERVICE_ACCOUNT:
        return token_caller(mint(settings, owner, *scopes, name=name), name)
    with session_scope(settings.db_url, write=False) as session:
        ada = catalog.find_user(session, "ada@example.com")
    assert ada is not None
    body = tokens.TokenCreate(name=name, scopes=[tokens.Scope(s) for s in scopes])
    return token_caller(tokens.create_service_token(settings, ada, owner, body).token, name)


@pytest_asyncio.fixture(scope="module")
async def world(world_settings: Settings) -> AsyncIterator[World]:
    settings = world_settings
    _service_account(settings)
    callers = {name: _mint(settings, name, owner, scopes) for name, (owner, scopes) in TOKENS.items()}
    callers["deactivated user's session"] = session_caller(settings, DEACTIVATED)
    with session_scope(settings.db_url) as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(ApiToken).where(col(ApiToken.name) == "expired token").values(expires_at=past))
        session.execute(update(ApiToken).where(col(ApiToken.name) == "revoked token").values(revoked_at=past))
        # Deactivated without ending anything (as a restore or a hand edit would): refused all the same.
        session.execute(update(User).where(col(User.email) == DEACTIVATED).values(active=False))
    behind_proxy = settings.model_copy(update={"auth": "proxy", "trusted_proxies": ["127.0.0.1"]})
    callers |= {name: proxy_caller(email, behind_proxy) for name, email in PROXIED.items()}
    callers |= {name: proxy_caller(email) for name, email in PROXIED_NO_CSRF.items()}
    callers[SESSION_BEHIND_PROXY] = session_caller(settings, "ada@example.com")
    async with client(offline_app(settings)) as http, client(offline_app(behind_proxy)) as proxy:
        yield World(settings, http, proxy, callers)


def expected(allowed: Allowed, caller: str, method: str) -> str:
    """``401``, ``403`` or ``through`` (the sign-in layer lets the call through); ``public``: the same for all."""
    if allowed is SIGNED:  # before the CSRF check, which such a route is exempt from
        return "401"
    if (method in UNSAFE and caller in NO_CSRF) or (method == "POST" and caller in PROXIED_NO_CSRF):
        # The CSRF check comes before anything else, public routes included. Behind the proxy, only what another
        # site's page can send without a preflight needs the token: a POST (of a form's type, or none).
        return "403"
    if allowed.who == "public":
        return "public"
    if caller in DEAD or caller == SESSION_BEHIND_PROXY:
        return "401"
    person = {**SESSIONS, **NO_CSRF, **PROXIED, **PROXIED_NO_CSRF}.get(caller)
    if person is not None:
        role = next(name for name, email in PEOPLE.items() if email == person)
        if allowed.who == "admin":
            return "through" if role == "admin" else "403"
        if allowed.who == "reader":
            return "403" if role == "ineligible" else "through"
        if allowed.who == "requester":
            return "through" if role == "requester" else "403"
        return "through"
    # A live token: within its scopes, and never more than its owner.
    owner, scopes = TOKENS[caller]
    acts_as_admin = owner == PEOPLE["admin"] and "admin" in scopes
    if allowed.who == "session" or allowed.scope is None:
        return "403"
    if allowed.scope == ANY_TOKEN:
        return "through"
    if allowed.who == "admin":
        return "through" if acts_as_admin else "403"
    if allowed.who == "requester":
        return "403"  # no token's owner asked for it
    if allowed.who == "reader" and owner != PEOPLE["approver"] and not acts_as_admin:
        return "403"  # neither its approver nor (with the admin scope) an admin
    return "through" if str(allowed.scope) in scopes else "403"


def _concrete(path: str) -> str:
    if path == "/static":
        return "/static/lapse.css"
    for placeholder, value in EXAMPLES.items():
        path = path.replace(placeholder, value)
    return path


async def _call(world: World, caller: str, method: str, path: str) -> httpx.Response:
    http = world.proxy if caller in BEHIND_PROXY else world.http
    if caller == "anonymous":
        who = Caller("anonymous")
    elif caller in SESSIONS:
        who = session_caller(world.settings, SESSIONS[caller])  # a new one each time: /auth/logout ends it
    elif caller in NO_CSRF:
        with_token = session_caller(world.settings, NO_CSRF[caller])
        who = Caller(caller, cookies=with_token.cookies)
    else:
        who = world.callers[caller]
    return await who.call(http, method, _concrete(path))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_route_answers_every_caller_as_the_matrix_says(world: World, method: str, path: str) -> None:
    allowed = MATRIX.get((method, path))
    assert allowed is not None, f"{method} {path} has no entry in MATRIX: say who may call it (and with which scope)"
    wrong = []
    statuses: dict[bool, set[int]] = {False: set(), True: set()}  # by app: OIDC, behind the proxy
    for caller in CALLERS:
        response = await _call(world, caller, method, path)
        status = response.status_code
        got = "401" if status == 401 else "403" if status == 403 else "through"
        want = expected(allowed, caller, method)
        if want == "public":
            statuses[caller in BEHIND_PROXY].add(status)
        if (want != "public" and got != want) or (status >= 500 and status != 503):
            wrong.append(f"{caller}: {status} (expected {want}) {response.text[:200]}")
    assert not wrong, f"{method} {path}:\n" + "\n".join(wrong)
    if allowed is PUBLIC:  # it does not look at who calls: everyone gets the same answer (from the same app)
        for behind_proxy, seen in statuses.items():
            assert len(seen) == 1, f"{method} {path}: a public route answered {sorted(seen)} ({behind_proxy=})"


def test_the_matrix_names_no_route_the_app_does_not_have() -> None:
    assert sorted(set(MATRIX) - set(ROUTES)) == []

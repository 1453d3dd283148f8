"""A recent sign-in for sensitive decisions (an approval workflow's ``reauthenticate_within``), over HTTP with
Temporal behind the API: who may approve, extend and end a request under such a workflow, and how a caller who
may not yet is told to sign in again. The whole way through the identity provider, in a browser, is
``tests/web/test_reauthentication.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from starter.api.app import create_app
from starter.services import sessions
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Grant
from tests.api.answers import problem
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
from tests.conftest import clear_sync_schedules, load_into
from tests.support import eventually

ROLE = "ledger/payments-api/deploy"
"""Under ``fresh-sign-in`` once ``_ask_for_a_recent_sign_in`` loads it: ken asks, margaret (his manager) decides."""
KEN, MARGARET, ADA = "ken@example.com", "margaret@example.com", "ada@example.com"
REAUTHENTICATION = "urn:lapse:problem:reauthentication-required"
FRESH_SIGN_IN: dict[str, list[dict[str, Any]]] = {
    "approval_workflows": [
        {
            "name": "fresh-sign-in",
            "description": "Your manager approves, signed in within the last ten minutes.",
            "reauthenticate_within": "PT10M",
            "rules": [
                {
                    "name": "manager",
                    "steps": [{"name": "manager", "approvers": [{"kind": "manager"}]}],
                    "max_duration": "P1D",
                }
            ],
        }
    ],
    "assignments": [{"workflow": "fresh-sign-in", "scope": ROLE}],
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"auth": "oidc"}  # sessions and tokens; the proxy's header is tested in a mode of its own


@pytest_asyncio.fixture
async def http(env: WorkflowEnvironment, settings: Settings, worker: None) -> AsyncIterator[httpx.AsyncClient]:
    load_into(settings, FRESH_SIGN_IN)
    async with client(create_app(settings, client=env.client)) as http:
        http.timeout = httpx.Timeout(60)
        yield http
    await clear_sync_schedules(env.client)


def signed_in(settings: Settings, email: str, *, ago: timedelta) -> Caller:
    """A browser session of ``email``'s whose person authenticated at the provider ``ago``."""
    started = sessions.start_session(settings, email, auth_time=datetime.now(UTC) - ago)
    return Caller(
        f"session:{email}:{ago}",
        headers={"X-CSRF-Token": started.csrf_token},
        cookies={sessions.COOKIE_NAME: started.id},
    )


async def ok(http: httpx.AsyncClient, caller: Caller, method: str, path: str, body: Any = None) -> Any:
    response = await caller.call(http, method, path, json=body)
    assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


async def ask(http: httpx.AsyncClient, settings: Settings, role: str = ROLE) -> str:
    ken = signed_in(settings, KEN, ago=timedelta(hours=5))  # asking for access never needs a recent sign-in
    made = await ok(http, ken, "POST", "/api/requests", {"role": role, "duration": "PT1H", "justification": "deploy"})
    return str(made["id"])


async def state_of(http: httpx.AsyncClient, settings: Settings, request_id: str, *states: str) -> dict[str, Any]:
    ada = session_caller(settings, ADA)
    found: dict[str, Any] = await eventually(
        lambda: ok(http, ada, "GET", f"/api/requests/{request_id}"),
        until=lambda status: status["state"] in states,
        what=f"request {request_id} to be {' or '.join(states)}",
    )
    return found


def refused_events(settings: Settings, action: str) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(col(AuditEvent.action) == f"{action}.refused").order_by(col(AuditEvent.id))
        return list(session.exec(query))


def sign_in_again(response: httpx.Response, request_id: str) -> str:
    """The re-authentication problem's URL, checked: back to the provider for at most 10 minutes, then here."""
    problem(response, 401)
    body = response.json()
    assert body["type"] == REAUTHENTICATION and body["max_age"] == 600, body
    url = urlsplit(body["reauthenticate_url"])
    assert url.path == "/auth/login" and url.netloc == ""
    assert parse_qs(url.query) == {"max_age": ["600"], "next": [f"/requests/{request_id}"]}
    assert body["reauthenticate_url"] in body["detail"]
    return str(body["reauthenticate_url"])


async def test_approving_needs_a_sign_in_within_the_workflows_window(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    request_id = await ask(http, settings)
    status = await state_of(http, settings, request_id, "pending")
    assert status["reauthenticate_within"] == "PT10M"  # recorded when it started

    approve = f"/api/requests/{request_id}/approve"
    stale = signed_in(settings, MARGARET, ago=timedelta(minutes=11))
    sign_in_again(await stale.call(http, "POST", approve, json={"comment": "ok"}), request_id)
    unknown = sessions.start_session(settings, MARGARET, auth_time=None)  # a provider that did not say when
    unknown_caller = Caller(
        "unknown", headers={"X-CSRF-Token": unknown.csrf_token}, cookies={sessions.COOKIE_NAME: unknown.id}
    )
    sign_in_again(await unknown_caller.call(http, "POST", approve, json={}), request_id)
    token = token_caller(mint(settings, MARGARET, "approve"))
    detail = problem(await token.call(http, "POST", approve, json={}), 403)
    assert "recent browser sign-in" in detail and "API token" in detail and f"/requests/{request_id}" in detail

    refusals = refused_events(settings, "request.approve")
    assert refusals and {e.actor for e in refusals} == {MARGARET}
    assert all(e.target == f"access-request-{request_id}" for e in refusals)
    assert (await state_of(http, settings, request_id, "pending"))["steps"][0]["decisions"] == []  # none counted

    fresh = signed_in(settings, MARGARET, ago=timedelta(minutes=2))
    await ok(http, fresh, "POST", approve, {"comment": "signed in just now"})
    await state_of(http, settings, request_id, "active")


async def test_denying_and_giving_back_need_no_recent_sign_in(http: httpx.AsyncClient, settings: Settings) -> None:
    stale_margaret = signed_in(settings, MARGARET, ago=timedelta(hours=3))
    denied = await ask(http, settings)
    await ok(http, stale_margaret, "POST", f"/api/requests/{denied}/deny", {"comment": "not today"})
    await state_of(http, settings, denied, "denied")

    withdrawn = await ask(http, settings)
    stale_ken = signed_in(settings, KEN, ago=timedelta(hours=3))
    await ok(http, stale_ken, "POST", f"/api/requests/{withdrawn}/cancel", {})
    await state_of(http, settings, withdrawn, "cancelled")

    held = await ask(http, settings)
    await ok(http, signed_in(settings, MARGARET, ago=timedelta(0)), "POST", f"/api/requests/{held}/approve", {})
    await state_of(http, settings, held, "active")
    await ok(http, stale_ken, "POST", f"/api/requests/{held}/revoke", {"comment": "done"})
    await state_of(http, settings, held, "revoked")
    assert not refused_events(settings, "grant.revoke") and not refused_events(settings, "request.cancel")


async def test_extending_needs_a_recent_sign_in_to_ask_and_to_approve(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    request_id = await ask(http, settings)
    await ok(http, signed_in(settings, MARGARET, ago=timedelta(0)), "POST", f"/api/requests/{request_id}/approve", {})
    await state_of(http, settings, request_id, "active")

    extend = f"/api/requests/{request_id}/extend"
    stale_ken = signed_in(settings, KEN, ago=timedelta(hours=1))
    sign_in_again(await stale_ken.call(http, "POST", extend, json={"duration": "PT1H"}), request_id)
    detail = problem(
        await token_caller(mint(settings, KEN, "request")).call(http, "POST", extend, json={"duration": "PT1H"}), 403
    )
    assert "API token" in detail
    assert refused_events(settings, "grant.extend")
    await ok(
        http, signed_in(settings, KEN, ago=timedelta(0)), "POST", extend, {"duration": "PT1H", "justification": "more"}
    )

    approve = f"/api/requests/{request_id}/approve"
    response = await signed_in(settings, MARGARET, ago=timedelta(hours=1)).call(http, "POST", approve, json={})
    sign_in_again(response, request_id)
    assert "an extension of" in response.json()["detail"]
    await ok(http, signed_in(settings, MARGARET, ago=timedelta(seconds=30)), "POST", approve, {})
    status = await state_of(http, settings, request_id, "active")
    assert status["extensions"][0]["state"] == "approved"


async def test_ending_someone_elses_grant_needs_a_recent_sign_in(http: httpx.AsyncClient, settings: Settings) -> None:
    request_id = await ask(http, settings)
    await ok(http, signed_in(settings, MARGARET, ago=timedelta(0)), "POST", f"/api/requests/{request_id}/approve", {})
    await state_of(http, settings, request_id, "active")
    with session_scope(settings.db_url, write=False) as session:
        grant = session.exec(select(Grant).where(Grant.request_id == request_id)).one()

    stale_ada = signed_in(settings, ADA, ago=timedelta(days=1))
    sign_in_again(await stale_ada.call(http, "POST", f"/api/grants/{grant.id}/revoke", json={}), request_id)
    sign_in_again(await stale_ada.call(http, "POST", f"/api/requests/{request_id}/revoke", json={}), request_id)
    admin_token = token_caller(mint(settings, ADA, "admin"))
    problem(await admin_token.call(http, "POST", f"/api/grants/{grant.id}/revoke", json={}), 403)
    assert {e.actor for e in refused_events(settings, "grant.revoke")} == {ADA}
    await state_of(http, settings, request_id, "active")

    # A page's revoke takes the browser to sign in again (a page, since a form may post only to Lapse, redirects
    # included), which comes back to the request's page.
    page = await stale_ada.call(
        http, "POST", f"/access/{request_id}/give-back", data={"comment": "x"}, follow_redirects=False
    )
    again = f"/auth/login?max_age=600&next=%2Frequests%2F{request_id}"
    assert page.status_code == 401 and "text/html" in page.headers["content-type"], page.text
    assert page.headers["refresh"] == f"0; url={again}" and f'href="{again.replace("&", "&amp;")}"' in page.text
    assert page.headers["cache-control"] == "no-store"

    fresh_ada = signed_in(settings, ADA, ago=timedelta(minutes=1))
    revoked = await ok(http, fresh_ada, "POST", f"/api/grants/{grant.id}/revoke", {"comment": "incident over"})
    assert revoked["request"]["state"] == "revoked"


async def test_a_workflow_without_a_window_takes_any_sign_in(http: httpx.AsyncClient, settings: Settings) -> None:
    request_id = await ask(http, settings, role="ledger/payments-api/read")  # read-only: 1h is automatic
    status = await state_of(http, settings, request_id, "active")
    assert status["reauthenticate_within"] is None
    stale_ada = signed_in(settings, ADA, ago=timedelta(days=1))
    await ok(http, stale_ada, "POST", f"/api/requests/{request_id}/revoke", {})
    await state_of(http, settings, request_id, "revoked")


@pytest.mark.parametrize("settings_overrides", [{}], ids=["proxy"])
async def test_behind_the_sso_proxy_such_a_decision_cannot_be_made(
    env: WorkflowEnvironment, settings: Settings, worker: None
) -> None:
    """Lapse cannot tell when the proxy's user signed in: approving is refused, saying so; denying is not."""
    load_into(settings, FRESH_SIGN_IN)
    async with client(create_app(settings, client=env.client)) as http:
        http.timeout = httpx.Timeout(60)
        ken, margaret = proxy_caller(KEN, settings), proxy_caller(MARGARET, settings)
        made = await ok(http, ken, "POST", "/api/requests", {"role": ROLE, "duration": "PT1H", "justification": "x"})
        detail = problem(await margaret.call(http, "POST", f"/api/requests/{made['id']}/approve", json={}), 403)
        assert "SSO proxy" in detail and "OIDC" in detail
        await ok(http, margaret, "POST", f"/api/requests/{made['id']}/deny", {"comment": "no"})
    await clear_sync_schedules(env.client)


# --- the organisation file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "says"),
    [("PT30S", "between PT1M and P1D"), ("P2D", "between PT1M and P1D"), ("soon", "not a duration")],
)
async def test_a_window_out_of_bounds_is_refused_naming_the_field(
    tmp_path: Path, app_db: str, window: str, says: str
) -> None:
    settings = offline_settings(tmp_path, app_db)
    ada = session_caller(settings, ADA)
    workflow = {**FRESH_SIGN_IN["approval_workflows"][0], "reauthenticate_within": window}
    body = {**FRESH_SIGN_IN, "approval_workflows": [workflow]}
    async with client(offline_app(settings)) as http:
        response = await ada.call(http, "POST", "/api/org", json=body)
    assert says in problem(response, 422, "approval_workflows.0.reauthenticate_within")


# --- a grant approved at once is an extension in effect ------------------------------------------------------

READ_ROLE = "ledger/payments-api/read"
QUICK_LOOK = {
    "name": "quick look",
    "when": {"duration_at_most": "PT1H"},
    "max_duration": "PT1H",
    "justification": False,
}
LONGER_READ = {
    "name": "longer read",
    "steps": [{"name": "manager", "approvers": [{"kind": "manager"}]}],
    "max_duration": "PT8H",
}


def read_only(window: str | None) -> dict[str, Any]:
    """The demo's ``read-only`` workflow (a short look at once, a longer one by the manager), with ``window``."""
    workflow = {"name": "read-only", "description": "Short looks are automatic.", "rules": [QUICK_LOOK, LONGER_READ]}
    return {"approval_workflows": [{**workflow, "reauthenticate_within": window}]}


async def test_a_request_approved_at_once_needs_a_recent_sign_in(http: httpx.AsyncClient, settings: Settings) -> None:
    """Grants may overlap: one more grant of a role held, approved at once, would extend it with no fresh sign-in."""
    load_into(settings, read_only("PT10M"))
    body = {"role": READ_ROLE, "duration": "PT30M", "justification": "look"}
    response = await signed_in(settings, KEN, ago=timedelta(hours=1)).call(http, "POST", "/api/requests", json=body)
    problem(response, 401)
    refusal = response.json()
    assert refusal["type"] == REAUTHENTICATION and refusal["max_age"] == 600, refusal
    url = urlsplit(refusal["reauthenticate_url"])
    assert parse_qs(url.query) == {"max_age": ["600"], "next": [f"/?role={READ_ROLE.replace('/', '%2F')}"]}
    detail = problem(
        await token_caller(mint(settings, KEN, "request")).call(http, "POST", "/api/requests", json=body), 403
    )
    assert "API token" in detail and "read-only" in detail
    assert {(e.actor, e.target) for e in refused_events(settings, "request.create")} == {(KEN, READ_ROLE)}

    # The catalog's form takes the browser to sign in again, back to the form with the role chosen.
    form = {"role": READ_ROLE, "duration": "PT30M", "justification": "look"}
    stale = signed_in(settings, KEN, ago=timedelta(hours=1))
    page = await stale.call(http, "POST", "/requests", data=form, follow_redirects=False)
    assert page.status_code == 401 and page.headers["refresh"].startswith(
        "0; url=/auth/login?max_age=600&next=%2F%3Frole"
    ), page.text
    assert await ok(http, signed_in(settings, KEN, ago=timedelta(minutes=1)), "GET", "/api/requests") == []  # none made

    made = await ok(http, signed_in(settings, KEN, ago=timedelta(minutes=1)), "POST", "/api/requests", body)
    await state_of(http, settings, made["id"], "active")
    # A request that waits for approvers needs none: they sign in afresh to approve it.
    await ask(http, settings)


async def test_asking_to_extend_takes_the_stricter_of_the_requests_window_and_the_policys_now(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    request_id = await ask(http, settings, role=READ_ROLE)  # read-only asks for no recent sign-in: granted at once
    assert (await state_of(http, settings, request_id, "active"))["reauthenticate_within"] is None
    load_into(settings, read_only("PT10M"))  # made stricter since

    extend = f"/api/requests/{request_id}/extend"
    body = {"duration": "PT30M", "justification": "a longer look"}
    stale_ken = signed_in(settings, KEN, ago=timedelta(hours=1))
    sign_in_again(await stale_ken.call(http, "POST", extend, json=body), request_id)
    assert refused_events(settings, "grant.extend")
    await ok(http, signed_in(settings, KEN, ago=timedelta(minutes=1)), "POST", extend, body)

"""A reviewer's revoke of a JIT grant is ending someone else's grant: where the grant's request started under an
approval workflow that says ``reauthenticate_within``, submitting it needs a sign-in that recent, as ending the grant
directly does (``tests/api/test_reauthentication.py``). Over the API (the 401 problem; a token and the SSO proxy's
header refused), the Reviews page (the round trip through the provider) and the CLI. Campaigns are made in the app
DB (no workflow: telling one that decisions were submitted fails, and is said, without losing them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from sqlmodel import col, select
from typer.testing import CliRunner

import starter.cli as cli
from access.reviews import ItemState
from starter.services import sessions
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, AuditEvent, ReviewItem
from tests.api.answers import problem
from tests.api.identities import Caller, client, mint, offline_app, offline_settings, proxy_caller, token_caller
from tests.api.review_fixtures import CAMPAIGN, T0, linus_campaign

LINUS = "linus@example.com"
REAUTHENTICATION = "urn:lapse:problem:reauthentication-required"
SUBMIT, DRAFT = "/api/reviews/items/submit", "/api/reviews/items/draft"


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return offline_settings(tmp_path, app_db)  # OIDC: sessions and tokens


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(settings)) as http:
        yield http


def signed_in(settings: Settings, email: str, *, ago: timedelta) -> Caller:
    """A browser session of ``email``'s whose person authenticated at the provider ``ago``."""
    started = sessions.start_session(settings, email, auth_time=datetime.now(UTC) - ago)
    return Caller(
        f"session:{email}:{ago}",
        headers={"X-CSRF-Token": started.csrf_token},
        cookies={sessions.COOKIE_NAME: started.id},
    )


def requests_under(settings: Settings, windows: dict[str, str | None]) -> None:
    """The requests behind the campaign's JIT items, each started under a workflow with this window (or none)."""
    with session_scope(settings.db_url) as session:
        for request_id, window in windows.items():
            status = {"id": request_id, "policy": "fresh-sign-in" if window else "standard"}
            session.add(
                AccessRequest(
                    id=request_id,
                    requester="alan@example.com",
                    role="ledger/prod-db/read",
                    state="active",
                    created_at=T0,
                    status=status | {"reauthenticate_within": window},
                )
            )


def row(settings: Settings, item_id: int) -> ReviewItem:
    with session_scope(settings.db_url, write=False) as session:
        found = session.get(ReviewItem, item_id)
    assert found is not None
    return found


def refusals(settings: Settings) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(AuditEvent.action == "review.submit.refused").order_by(col(AuditEvent.id))
        return list(session.exec(query))


async def ok(http: httpx.AsyncClient, caller: Caller, method: str, path: str, body: Any = None) -> Any:
    response = await caller.call(http, method, path, json=body)
    assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


async def test_revoking_a_grant_whose_workflow_asks_for_a_recent_sign_in_needs_one(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ids = linus_campaign(settings)  # alan-read is request req1's grant, barbara-write req2's
    requests_under(settings, {"req1": "PT10M", "req2": None})
    stale = signed_in(settings, LINUS, ago=timedelta(hours=1))

    # Drafting takes any sign-in; so does a revoke whose workflow asks for none, and keeping.
    await ok(http, stale, "POST", DRAFT, {"items": [ids["barbara-write"]], "decision": "revoke", "comment": "left"})
    assert (await ok(http, stale, "POST", SUBMIT, {"items": [ids["barbara-write"]]}))["decided"] == 1
    await ok(http, stale, "POST", DRAFT, {"items": [ids["alan-read"]], "decision": "keep"})
    assert (await ok(http, stale, "POST", SUBMIT, {}))["decided"] == 1

    # Revoking alan's, under fresh-sign-in: sign in again, back to the drafts; nothing recorded meanwhile.
    await ok(http, stale, "POST", DRAFT, {"items": [ids["alan-read"]], "decision": "revoke", "comment": "moved"})
    await ok(http, stale, "POST", DRAFT, {"items": [ids["alan-external"]], "decision": "keep"})
    response = await stale.call(http, "POST", SUBMIT, json={})
    problem(response, 401)
    body = response.json()
    assert body["type"] == REAUTHENTICATION and body["max_age"] == 600, body
    url = urlsplit(body["reauthenticate_url"])
    assert url.path == "/auth/login" and parse_qs(url.query) == {"max_age": ["600"], "next": ["/reviews?state=drafted"]}
    assert "alan@example.com's ledger/prod-db/read (request req1)" in body["detail"]
    assert "fresh-sign-in" in body["detail"]
    for item_id in (ids["alan-read"], ids["alan-external"]):  # neither the revoke nor the keep beside it
        assert row(settings, item_id).draft is not None
    assert row(settings, ids["alan-read"]).decision == "keep"  # the decision before stands
    assert [(e.actor, e.target) for e in refusals(settings)] == [(LINUS, CAMPAIGN)]

    # An API token cannot vouch for a recent sign-in, nor can the SSO proxy's header.
    token = token_caller(mint(settings, LINUS, "approve"))
    detail = problem(await token.call(http, "POST", SUBMIT, json={"items": [ids["alan-read"]]}), 403)
    assert "recent browser sign-in" in detail and "API token" in detail and "/reviews?state=drafted" in detail

    fresh = signed_in(settings, LINUS, ago=timedelta(minutes=1))
    submitted = await ok(http, fresh, "POST", SUBMIT, {})
    assert submitted["decided"] == 2
    alan = row(settings, ids["alan-read"])
    assert (alan.state, alan.decision, alan.comment, alan.draft) == (ItemState.DECIDED, "revoke", "moved", None)


@pytest.mark.parametrize("settings_overrides", [{"auth": "proxy"}], ids=["proxy"])
async def test_behind_the_sso_proxy_such_a_revoke_cannot_be_submitted(
    tmp_path: Path, app_db: str, settings_overrides: dict[str, Any]
) -> None:
    settings = offline_settings(tmp_path, app_db, **settings_overrides)
    ids = linus_campaign(settings)
    requests_under(settings, {"req1": "PT10M"})
    linus = proxy_caller(LINUS, settings)
    async with client(offline_app(settings)) as http:
        await ok(http, linus, "POST", DRAFT, {"items": [ids["alan-read"]], "decision": "revoke", "comment": "moved"})
        detail = problem(await linus.call(http, "POST", SUBMIT, json={}), 403)
    assert "SSO proxy" in detail and "OIDC" in detail
    assert row(settings, ids["alan-read"]).state == ItemState.OPEN


async def test_the_reviews_page_sends_the_browser_to_sign_in_again(settings: Settings, http: httpx.AsyncClient) -> None:
    ids = linus_campaign(settings)
    requests_under(settings, {"req1": "PT10M"})
    stale = signed_in(settings, LINUS, ago=timedelta(hours=1))
    form = {"items": [str(ids["alan-read"])], "decision": "revoke", "comment": "moved"}
    drafted = await stale.call(http, "POST", "/reviews/decide", data=form, follow_redirects=False)
    assert drafted.status_code == 303, drafted.text
    page = await stale.call(http, "POST", "/reviews/submit", data={"back": "/reviews"}, follow_redirects=False)
    again = "/auth/login?max_age=600&next=%2Freviews%3Fstate%3Ddrafted"
    assert page.status_code == 401 and "text/html" in page.headers["content-type"], page.text
    assert page.headers["refresh"] == f"0; url={again}" and f'href="{again.replace("&", "&amp;")}"' in page.text
    assert row(settings, ids["alan-read"]).state == ItemState.OPEN
    fresh = signed_in(settings, LINUS, ago=timedelta(minutes=1))
    done = await fresh.call(http, "POST", "/reviews/submit", data={"back": "/reviews"}, follow_redirects=False)
    assert done.status_code == 303 and "1+decision+recorded" in done.headers["location"], done.text
    assert row(settings, ids["alan-read"]).decision == "revoke"


async def test_the_cli_says_to_submit_such_a_revoke_in_the_web_ui(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI calls the API with its token (``lapse login``): refused, saying where it can be done."""
    ids = linus_campaign(settings)
    requests_under(settings, {"req1": "PT10M"})
    monkeypatch.setenv("LAPSE_TOKEN", mint(settings, LINUS, "approve"))
    monkeypatch.delenv("LAPSE_USER", raising=False)
    loop, api = asyncio.get_running_loop(), "http://localhost:8000"  # a token goes over plain http only here
    async with client(offline_app(settings), base_url=api) as http:

        def request(method: str, url: str, *, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
            call = http.request(method, url.removeprefix(api), **kwargs)
            return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=timeout.read)

        monkeypatch.setattr(cli, "httpx", SimpleNamespace(request=request, HTTPError=httpx.HTTPError))
        args = ["--api", api, "reviews", "revoke", str(ids["alan-read"]), "--comment", "moved", "--submit"]
        result = await asyncio.to_thread(CliRunner().invoke, cli.app, args)
    assert result.exit_code == 1, result.output
    assert "recent browser sign-in" in result.output and "/reviews?state=drafted" in result.output
    assert row(settings, ids["alan-read"]).state == ItemState.OPEN

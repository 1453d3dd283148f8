"""The API tokens page (``/tokens``): make a token (shown once), list mine, revoke; for admins, service accounts.

Over HTTP first (the demo organisation, no Temporal behind it: nothing here reaches a workflow), then in
Chromium: a token made on the page, seen once, used against the API, revoked, then refused; and axe-core on
the page as a requester and as an admin with a service account."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect
from sqlmodel import select

from starter.api.app import create_app
from starter.services.tokens import token_hash
from store.db import session_scope
from store.settings import Settings
from store.tables import ApiToken, AuditEvent
from tests.api.identities import session_caller
from tests.conftest import make_settings
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits
from tests.web.test_pages import FORM, html

TOKEN = re.compile(r"lapse_[A-Za-z0-9_-]{43}")
SHOWN = re.compile(r'<code id="new-token">(lapse_[A-Za-z0-9_-]{43})</code>')
ONCE = "this is the only time it is shown"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def as_user(email: str) -> dict[str, str]:
    return {"X-Forwarded-Email": email}


ALAN, ADA = as_user("alan@example.com"), as_user("ada@example.com")


def new_token(response: httpx.Response) -> str:
    """The token a page shows once."""
    found = SHOWN.search(html(response))
    assert found is not None, response.text
    return found[1]


@pytest.fixture
def demo(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1")


class Pages:
    """The app over HTTP, its forms posted as a browser posts them: with the CSRF token the page gives."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.get(path, headers=headers)

    async def post(
        self, path: str, *, headers: dict[str, str], data: dict[str, str | list[str]] | None = None
    ) -> httpx.Response:
        form = dict(data or {})
        if not any(name.lower() == "authorization" for name in headers):  # a token needs none
            form.setdefault("csrf_token", await self.csrf_token(headers))
        return await self.http.post(path, data=form, headers=headers)

    async def csrf_token(self, headers: dict[str, str]) -> str:
        found = CSRF_META.search((await self.http.get("/tokens", headers=headers)).text)
        return found[1] if found else ""


@pytest_asyncio.fixture
async def pages(demo: Settings) -> AsyncIterator[Pages]:
    app = create_app(demo, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield Pages(client)


async def make_token(pages: Pages, who: dict[str, str], **form: str | list[str]) -> httpx.Response:
    return await pages.post(
        "/tokens", data={"name": "ci", "scopes": ["read"], "expires_days": "90", **form}, headers=who
    )


# --- making one, seeing it once --------------------------------------------------------------------------


async def test_the_page_asks_who_is_calling_and_is_in_the_nav(pages: Pages) -> None:
    assert (await pages.get("/tokens")).status_code == 401
    assert 'href="/tokens"' in html(await pages.get("/", headers=ALAN))
    page = html(await pages.get("/tokens", headers=ALAN))
    assert 'href="/tokens" aria-current="page">API tokens</a>' in page
    assert "You have no tokens yet." in page


async def test_a_new_token_is_shown_once_and_stored_as_a_hash(pages: Pages, demo: Settings) -> None:
    made = await make_token(pages, ALAN, name="deploy <b>bot</b>", scopes=["read", "request"], expires_days="30")
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = new_token(made)
    assert ONCE in made.text and 'data-copy="new-token"' in made.text  # the copy button (lapse.js)
    assert "lapse login" in made.text and "Authorization: Bearer" in made.text
    assert "deploy &lt;b&gt;bot&lt;/b&gt;" in made.text and "<b>bot</b>" not in made.text

    with session_scope(demo.db_url, write=False) as session:
        row = session.exec(select(ApiToken)).one()
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "token.created")).all()
    assert row.hash == token_hash(token) and token not in repr(row.model_dump())
    assert row.owner == "alan@example.com" and row.scopes == ["read", "request"]
    assert abs(row.expires_at.replace(tzinfo=UTC) - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert len(events) == 1 and token not in str(events[0].details)

    listed = html(await pages.get("/tokens", headers=ALAN))
    assert not TOKEN.search(listed) and ONCE not in listed  # never again
    row_html = listed[listed.index(f'id="token-{row.id}"') :]
    assert "<code>read</code>, <code>request</code>" in row_html and "never" in row_html
    assert f'action="/tokens/{row.id}/revoke"' in row_html

    me = await pages.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["email"] == "alan@example.com" and me.json()["via"] == "token"
    listed = html(await pages.get("/tokens", headers=ALAN))
    assert "never" not in listed[listed.index(f'id="token-{row.id}"') :].split("</tr>")[0]  # its last use


async def test_the_expiry_defaults_to_90_days_and_is_at_most_a_year(pages: Pages, demo: Settings) -> None:
    page = html(await pages.get("/tokens", headers=ALAN))
    assert 'name="expires_days" min="1" max="365"' in page and 'value="90"' in page
    made = await make_token(pages, ALAN, expires_days="")  # no expiry given: the default
    assert made.status_code == 200
    with session_scope(demo.db_url, write=False) as session:
        row = session.exec(select(ApiToken)).one()
    assert row.expires_at - row.created_at == timedelta(days=90)
    for days in ("366", "0", "-1", "soon", "1" * 12, "²", "1.5"):
        refused = await make_token(pages, ALAN, name="long", expires_days=days)
        assert refused.status_code == 422, days
        assert "expires in: a whole number of days from 1 to 365" in html(refused)
        assert 'id="mine-days"' in refused.text and 'aria-invalid="true"' in refused.text


async def test_a_refused_form_comes_back_with_the_reason_and_what_was_typed(pages: Pages) -> None:
    refused = await make_token(pages, ALAN, name="my bot", scopes=[])
    assert refused.status_code == 422 and "Not done: choose at least one scope" in html(refused)
    assert 'value="my bot"' in refused.text and not SHOWN.search(refused.text)
    nameless = await make_token(pages, ALAN, name=" ")
    assert nameless.status_code == 422 and "name: give it a name" in html(nameless)
    unknown = await make_token(pages, ALAN, scopes=["everything"])
    assert unknown.status_code == 422 and "scopes: Input should be &#39;read&#39;" in html(unknown)


async def test_the_admin_scope_is_offered_to_admins_only(pages: Pages) -> None:
    assert 'value="admin"' not in html(await pages.get("/tokens", headers=ALAN))
    assert 'id="mine-scope-admin" name="scopes" value="admin"' in html(await pages.get("/tokens", headers=ADA))
    forced = await make_token(pages, ALAN, name="sneaky", scopes=["read", "admin"])
    assert forced.status_code == 403 and "cannot have the admin scope" in html(forced)
    assert 'value="sneaky"' in forced.text and not SHOWN.search(forced.text)
    made = await make_token(pages, ADA, scopes=["read", "admin"])
    me = await pages.get("/api/me", headers={"Authorization": f"Bearer {new_token(made)}"})
    assert me.json()["admin"] is True


async def test_revoking_one_ends_it_at_once(pages: Pages) -> None:
    token = new_token(await make_token(pages, ALAN))
    bearer = {"Authorization": f"Bearer {token}"}
    token_id = (await pages.get("/api/me", headers=bearer)).json()["token_id"]

    other = await pages.post(f"/tokens/{token_id}/revoke", headers=as_user("ken@example.com"))
    assert other.status_code == 404 and f"you have no token {token_id}" in html(other)  # not his to see
    assert (await pages.get("/api/me", headers=bearer)).status_code == 200

    done = await pages.post(f"/tokens/{token_id}/revoke", headers=ALAN)
    assert done.status_code == 303 and done.headers["location"] == f"/tokens?revoked={token_id}"
    after = html(await pages.get(done.headers["location"], headers=ALAN))
    assert f"Token {token_id} was revoked" in after
    row = after[after.index(f'id="token-{token_id}"') :].split("</tr>")[0]
    assert "state-revoked" in row and "/revoke" not in row
    assert (await pages.get("/api/me", headers=bearer)).status_code == 401


async def test_a_token_cannot_make_or_revoke_tokens_through_the_page(pages: Pages) -> None:
    token = new_token(await make_token(pages, ADA, scopes=["read", "request", "approve", "admin"]))
    bearer = {"Authorization": f"Bearer {token}"}
    listed = await pages.get("/tokens", headers=bearer)  # reading is reading
    assert listed.status_code == 200 and not TOKEN.search(listed.text)
    token_id = (await pages.get("/api/me", headers=bearer)).json()["token_id"]
    for path in ("/tokens", f"/tokens/{token_id}/revoke", "/admin/service-accounts/ci@example.com/tokens"):
        refused = await pages.post(path, data={"name": "more", "scopes": ["read"]}, headers=bearer)
        assert refused.status_code == 403 and "sign in to do this" in html(refused), path


async def test_forms_carry_the_csrf_token_and_need_it(tmp_path: Path) -> None:
    """Signed in through OIDC (the default), a browser session's forms carry its CSRF token, and need it."""
    settings = make_settings(tmp_path / "oidc", "127.0.0.1:1", auth="oidc")
    ada = session_caller(settings, "ada@example.com")
    csrf = ada.headers.pop("X-CSRF-Token")
    app = create_app(settings, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
        made = await ada.call(
            http, "POST", "/admin/service-accounts", data={"email": "ci@example.com", "csrf_token": csrf}
        )
        assert made.status_code == 303
        page = html(await ada.call(http, "GET", "/tokens"))
        posting = [form for form in FORM.findall(page) if 'method="post"' in form]
        assert len(posting) >= 5  # sign out, create, new service account, a token for it, deactivate it
        for form in posting:
            assert f'<input type="hidden" name="csrf_token" value="{csrf}">' in form, form
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert not re.search(r"\sstyle=|\son[a-z]+=|<style", page)

        form = {"name": "ci", "scopes": "read", "expires_days": "90"}
        refused = await ada.call(http, "POST", "/tokens", data=form)
        assert refused.status_code == 403 and "CSRF token is missing or wrong" in html(refused)
        made = await ada.call(http, "POST", "/tokens", data={**form, "csrf_token": csrf})
        assert made.status_code == 200 and new_token(made)
        cross = await ada.call(
            http, "POST", "/tokens", data={**form, "csrf_token": csrf}, headers={"Origin": "https://evil.example"}
        )
        assert cross.status_code == 403 and "another site" in html(cross)


# --- service accounts (admins) ---------------------------------------------------------------------------


async def test_service_accounts_are_for_admins_only(pages: Pages) -> None:
    assert "Service accounts" not in html(await pages.get("/tokens", headers=ALAN))
    refused = await pages.post("/admin/service-accounts", data={"email": "ci@example.com"}, headers=ALAN)
    assert refused.status_code == 403 and "only admins can do this" in html(refused)
    assert 'id="accounts-title">Service accounts' in html(await pages.get("/tokens", headers=ADA))


async def test_an_admin_makes_a_service_account_gives_it_a_token_and_deactivates_it(pages: Pages) -> None:
    made = await pages.post("/admin/service-accounts", data={"email": "CI@example.com", "name": "deploys"}, headers=ADA)
    assert made.status_code == 303 and made.headers["location"].startswith("/tokens?account=ci%40example.com")
    page = html(await pages.get(made.headers["location"], headers=ADA))
    assert "Service account ci@example.com was created" in page and "deploys" in page
    assert 'id="account-1-scope-admin"' not in page  # not an admin account: no admin scope offered for it

    again = await pages.post("/admin/service-accounts", data={"email": "alan@example.com"}, headers=ADA)
    assert again.status_code == 409 and "alan@example.com is already a Lapse user" in html(again)
    assert 'value="alan@example.com"' in again.text

    minted = await pages.post(
        "/admin/service-accounts/ci@example.com/tokens",
        data={"name": "pipeline", "scopes": ["read", "request"], "expires_days": "7"},
        headers=ADA,
    )
    assert minted.status_code == 200 and "for ci@example.com</h2>" in html(minted)
    bearer = {"Authorization": f"Bearer {new_token(minted)}"}
    me = (await pages.get("/api/me", headers=bearer)).json()
    assert me["email"] == "ci@example.com" and me["service_account"] is True and me["scopes"] == ["read", "request"]
    listed = html(await pages.get("/tokens", headers=ADA))
    assert "pipeline" in listed and "by ada@example.com" in listed and not TOKEN.search(listed)

    no_admin = await pages.post(
        "/admin/service-accounts/ci@example.com/tokens", data={"name": "x", "scopes": ["admin"]}, headers=ADA
    )
    assert no_admin.status_code == 403 and "cannot have the admin scope" in html(no_admin)
    unknown = await pages.post(
        "/admin/service-accounts/alan@example.com/tokens", data={"name": "x", "scopes": ["read"]}, headers=ADA
    )
    assert unknown.status_code == 404 and "there is no service account alan@example.com" in html(unknown)

    spare = await pages.post(
        "/admin/service-accounts/ci@example.com/tokens", data={"name": "spare", "scopes": ["read"]}, headers=ADA
    )
    spare_bearer = {"Authorization": f"Bearer {new_token(spare)}"}
    spare_id = (await pages.get("/api/me", headers=spare_bearer)).json()["token_id"]
    assert f'action="/tokens/{spare_id}/revoke"' in html(await pages.get("/tokens", headers=ADA))
    assert (await pages.post(f"/tokens/{spare_id}/revoke", headers=ADA)).status_code == 303  # an admin's to revoke
    assert (await pages.get("/api/me", headers=spare_bearer)).status_code == 401
    assert (await pages.get("/api/me", headers=bearer)).status_code == 200  # the other one still works

    gone = await pages.post("/admin/service-accounts/ci@example.com/deactivate", headers=ADA)
    assert gone.status_code == 303 and "deactivated=ci%40example.com" in gone.headers["location"]
    page = html(await pages.get(gone.headers["location"], headers=ADA))
    assert "Service account ci@example.com was deactivated" in page and "deactivated</mark>" in page
    assert "New token for ci@example.com" not in page
    assert (await pages.get("/api/me", headers=bearer)).status_code == 401


# --- in Chromium ------------------------------------------------------------------------------------------


async def test_a_token_made_in_the_browser_is_shown_once_works_and_is_refused_once_revoked(as_user, web: str) -> None:
    alan = await as_user("alan@example.com")
    page = await alan("/")
    await page.get_by_role("link", name="API tokens").click()
    await page.wait_for_url(re.compile(r"/tokens$"))
    await page.get_by_label("Name", exact=True).fill("laptop")
    await page.get_by_role("checkbox", name=re.compile(r"request access")).check()
    await expect(page.get_by_label("Expires in (days)")).to_have_value("90")
    await page.get_by_role("button", name="Create token").click()

    shown = page.locator("#new-token")
    await expect(shown).to_have_text(TOKEN)
    await expect(page.locator(".new-token .notice")).to_contain_text("only time it is shown")
    token = await shown.inner_text()
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web)
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == token
    await check_accessibility(page, "api-tokens-created")

    async with httpx.AsyncClient(base_url=web) as http:
        me = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["email"] == "alan@example.com"
        assert me.json()["scopes"] == ["read", "request"]

        listed = await alan("/tokens")
        assert token not in await listed.content()  # once only
        row = listed.locator("tr", has_text="laptop")
        await expect(row).to_contain_text("active")
        await row.get_by_role("button", name="Revoke").click()
        await listed.wait_for_url(re.compile(r"/tokens\?revoked=\w+$"))
        await expect(listed.locator(".notice")).to_contain_text("was revoked")
        await expect(listed.locator("tr", has_text="laptop")).to_contain_text("revoked")
        assert not listed.errors  # type: ignore[attr-defined]

        refused = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401


async def test_the_tokens_page_passes_axe_at_desktop_and_phone_width(as_user, web: str) -> None:
    ada = await as_user("ada@example.com")
    setup = await ada("/tokens")
    await setup.get_by_label("Email (its name; no person may have it)").fill("ci@example.com")
    await setup.get_by_role("button", name="Create service account").click()
    await expect(setup.locator(".notice")).to_contain_text("ci@example.com was created")
    await setup.get_by_text("New token for ci@example.com").click()
    await setup.locator("#account-1-name").fill("pipeline")
    await setup.get_by_role("button", name="Create token for ci@example.com").click()
    await expect(setup.locator("#new-token")).to_have_text(TOKEN)
    await setup.close()

    for width in (1280, 360):
        for who, name in (("alan@example.com", "api-tokens"), ("ada@example.com", "api-tokens-admin")):
            visit = await as_user(who, width=width)
            page = await visit("/tokens")
            await expect(page.get_by_role("heading", name="My tokens")).to_be_visible()
            await check_accessibility(page, name if width > 400 else f"{name}-360px")
            await fits(page, width)
            await page.close()

"""The admin's permissions page: filters, sorts and keyset pages over every grant (both app databases), and
revoking a selection after seeing what it does; in Chromium end to end, and over HTTP for the edges."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect
from sqlmodel import select

from access.limits import MAX_ROLE_PATH
from starter.api.app import create_app
from starter.services.permissions import MAX_SELECTION, GrantFilter, SortKey, list_permissions
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, Grant, User
from tests.conftest import Api, FakeTarget, make_settings
from tests.web.conftest import check_accessibility
from tests.web.test_pages import as_user as signed_in_as
from tests.web.test_pages import html, with_csrf_token

ADA = "ada@example.com"
DEPLOY = "ledger/payments-api/deploy"
READ = "ledger/prod-db/read"
WRITE = "ledger/prod-db/write"
NOW = datetime.now(UTC).replace(microsecond=0)


def add(settings: Settings, **fields: Any) -> int:
    """A ledger row as a request, a birthright sync or discovery would leave it; its id."""
    with session_scope(settings.db_url) as session:
        grant = Grant(**{"granted_at": NOW, "user_email": fields.get("account"), **fields})
        session.add(grant)
        session.flush()
        assert grant.id is not None
        return grant.id


def ids_on(text: str) -> list[int]:
    """The grants listed on a permissions page, in order (their selection boxes)."""
    return [int(n) for n in re.findall(r'name="grant_id" value="(\d+)" form="selection"', text)]


# --- in the browser ---------------------------------------------------------------------------------


async def fits(page: Page, name: str) -> None:
    """Accessible at 1280 and at 360 px wide, and no wider than the window at 360."""
    await check_accessibility(page, f"{name}-1280")
    await page.set_viewport_size({"width": 360, "height": 900})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360, f"{name} scrolls sideways at 360 px"
    await check_accessibility(page, f"{name}-360")
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_an_admin_revokes_a_selection_of_grants_after_seeing_the_impact(
    as_user: Any, api: Api, settings: Settings, target: FakeTarget
) -> None:
    # A JIT grant through a real request and approval; a birthright grant whose account also holds the role
    # another way; an external grant on an account no user matches; and enough others to page through.
    created = await api.request("alan@example.com", DEPLOY, "PT1H", "release 7")
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "ok"})
    await api.wait_for(created["id"], "active")
    with session_scope(settings.db_url, write=False) as session:
        jit = session.exec(select(Grant).where(Grant.request_id == created["id"])).one().id
    target.held |= {("ken@example.com", READ), ("svc-backup", WRITE)}
    birthright = add(settings, account="ken@example.com", role=READ, path="birthright", policy="payments-baseline")
    also_ken = add(settings, account="ken@example.com", role=READ, path="external")
    external = add(settings, account="svc-backup", role=WRITE, path="external", user_email=None)
    for n in range(60):
        add(settings, account=f"filler{n:02d}", role="ledger/billing-reports/viewer", path="external")

    visit = await as_user(ADA)
    page = await visit("/admin/grants")
    await expect(page.locator("tbody tr")).to_have_count(50)
    await page.get_by_role("link", name="Next page").click()
    await expect(page.locator("tbody tr")).to_have_count(14)  # 64 grants: none skipped, none twice
    await page.get_by_role("link", name="First page").click()

    # Filter to the ledger's prod-db and payments-api roles, newest first.
    await page.get_by_label("Resource", exact=True).fill("ledger/prod-db")
    await page.get_by_label("Sort by").select_option("since")
    await page.get_by_label("Order").select_option("desc")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("tbody th[scope=row]")).to_have_text([str(external), str(also_ken), str(birthright)])
    await page.get_by_label("Resource", exact=True).fill("")
    await page.get_by_label("Path", exact=True).select_option("jit")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("tbody th[scope=row]")).to_have_text([str(jit)])
    await page.get_by_label("Path", exact=True).select_option("")
    await page.get_by_label("Role", exact=True).fill("ledger/p")  # a role path's start is whole segments: nothing here
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("tbody")).to_contain_text("No active grant matches.")
    await page.get_by_label("Role", exact=True).fill("ledger")
    await page.get_by_label("Sort by").select_option("until")
    await page.get_by_label("Order").select_option("asc")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("tbody th[scope=row]").first).to_have_text(str(jit))  # standing grants after it
    await fits(page, "permissions")

    for grant_id in (jit, birthright, external):
        await page.get_by_label(f"Select grant {grant_id}:").check()  # a labelled box, by keyboard too
    await page.get_by_label(f"Select grant {external}:").press("Space")
    await page.get_by_label(f"Select grant {external}:").press("Space")
    await page.get_by_role("button", name="Revoke selected").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Revoke 3 grants?")
    effect = page.locator(f"#impact-{jit} .effect")
    await expect(effect).to_contain_text(f"Its request {created['id']} (asked by alan@example.com) ends")
    await expect(effect.get_by_role("link", name=created["id"])).to_have_attribute("href", f"/requests/{created['id']}")
    effect = page.locator(f"#impact-{birthright} .effect")
    await expect(effect).to_contain_text("comes back at the next birthright sync unless its policy payments-baseline")
    await expect(effect).to_contain_text(f"The access stays: grant {also_ken} also covers account ken@example.com")
    await expect(page.locator(f"#impact-{external} .effect")).to_contain_text("The role is removed in the target")
    assert ("revoke", "svc-backup", WRITE) not in target.calls  # nothing happened yet
    await fits(page, "permissions-impact")

    await page.get_by_label("Why").fill("quarterly clean-up")
    await page.get_by_role("button", name="Revoke 3 grants").click()
    await expect(page.locator(".notice")).to_have_text("3 revoked.")
    for grant_id in (jit, birthright, external):
        await expect(page.locator(f"#outcome-{grant_id}")).to_contain_text("done")
    await expect(page.locator(f"#outcome-{jit}")).to_contain_text(f"Its request {created['id']} is revoked")
    await expect(page.locator(f"#outcome-{birthright}")).to_contain_text("the access stays")
    await fits(page, "permissions-revoked")

    assert ("revoke", "svc-backup", WRITE) in target.calls
    assert ("ken@example.com", READ) in target.held  # the external grant still covers it
    listed = await visit("/admin/grants?role=ledger/prod-db")
    await expect(listed.locator("tbody th[scope=row]")).to_have_text([str(also_ken)])
    request_page = await (await as_user("alan@example.com"))(f"/requests/{created['id']}")
    await expect(request_page.locator(".status-line")).to_contain_text("revoked")
    await expect(request_page.locator(".timeline")).to_contain_text("quarterly clean-up")


async def test_a_refused_revoke_is_shown_beside_the_ones_done(
    as_user: Any, api: Api, settings: Settings, target: FakeTarget
) -> None:
    kept = add(settings, account="ken@example.com", role=READ, path="external")
    ended = add(settings, account="ken@example.com", role=WRITE, path="external", active=False, ended_at=NOW)
    target.held.add(("ken@example.com", READ))
    page = await (await as_user(ADA))("/admin/grants")
    await page.get_by_label(f"Select grant {kept}:").check()
    await page.get_by_role("button", name="Revoke selected").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Revoke 1 grant?")
    # Someone else ends one of the grants between the impact and the confirmation.
    await page.evaluate(
        f"""document.querySelector('form[action="/admin/grants/revoke-selected"]')
              .insertAdjacentHTML('beforeend', '<input type=hidden name=grant_id value={ended}>')"""
    )
    await page.get_by_role("button", name="Revoke 1 grant").click()
    await expect(page.locator(".notice")).to_have_text("1 revoked, 1 refused.")
    await expect(page.locator(f"#outcome-{ended}")).to_contain_text(f"refused: grant {ended} already ended at")
    await expect(page.locator(f"#outcome-{kept}")).to_contain_text("done")


# --- over HTTP, on both app databases ---------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation with no Temporal behind it, and no grant yet."""
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def pages(ledger: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ledger, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield with_csrf_token(client, ledger)


def admin(settings: Settings) -> User:
    with session_scope(settings.db_url, write=False) as session:
        found = session.exec(select(User).where(User.email == ADA)).one()
        session.expunge(found)
    return found


@pytest.mark.every_app_db
async def test_each_filter_and_their_combinations(pages: httpx.AsyncClient, ledger: Settings) -> None:
    soon, later = NOW + timedelta(hours=1), NOW + timedelta(days=3)
    g = {
        "alan-read": add(ledger, account="alan@example.com", role=READ, expires_at=soon),
        "alan-deploy": add(ledger, account="alan@example.com", role=DEPLOY, expires_at=later),
        "ken-read": add(ledger, account="ken@example.com", role=READ, path="birthright", policy="p"),
        "svc-write": add(ledger, account="svc", role=WRITE, path="external", user_email=None),
        "sibling": add(ledger, account="ken@example.com", role="ledger/prod-dbx/read", path="external"),
        "people": add(ledger, account="ken@example.com", role="people/hr-system/admin", path="external"),
        "ended": add(ledger, account="ken@example.com", role=READ, active=False, ended_at=NOW),
    }
    name = {v: k for k, v in g.items()}

    async def listed(**query: str) -> list[str]:
        response = await pages.get("/admin/grants", params=query, headers=signed_in_as(ADA))
        assert response.status_code == 200, html(response)
        return [name[i] for i in ids_on(response.text)]

    assert await listed() == ["alan-read", "alan-deploy", "ken-read", "svc-write", "sibling", "people"]
    assert await listed(user="ALAN@example.com") == ["alan-read", "alan-deploy"]
    assert await listed(integration="people") == ["people"]
    assert await listed(integration="ledger", path="external") == ["svc-write", "sibling"]
    assert await listed(resource="ledger/prod-db") == ["alan-read", "ken-read", "svc-write"]  # not prod-dbx
    assert await listed(role=READ) == ["alan-read", "ken-read"]
    assert await listed(role="ledger/prod-db", path="birthright") == ["ken-read"]
    assert await listed(role="ledger/prod") == []  # whole segments only
    assert await listed(expiring_before=(NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")) == ["alan-read"]
    assert await listed(expiring_before=(NOW + timedelta(days=30)).date().isoformat()) == ["alan-read", "alan-deploy"]
    assert await listed(user="ken@example.com", resource="ledger/prod-db", integration="ledger") == ["ken-read"]
    assert await listed(resource="ledger/prod-db", integration="people") == []
    # Blank fields (the form's "any") ask for nothing.
    assert len(await listed(user="", role="", path="", expiring_before="", integration="", resource="")) == 6


@pytest.mark.every_app_db
async def test_each_sort_both_ways_with_standing_and_unlinked_last(pages: httpx.AsyncClient, ledger: Settings) -> None:
    a = add(
        ledger,
        account="ken@example.com",
        role=WRITE,
        granted_at=NOW - timedelta(days=2),
        expires_at=NOW + timedelta(hours=2),
    )
    b = add(ledger, account="alan@example.com", role=READ, granted_at=NOW - timedelta(days=1), path="birthright")
    c = add(ledger, account="svc", role=DEPLOY, granted_at=NOW - timedelta(days=3), user_email=None, path="external")
    d = add(ledger, account="grace@example.com", role=READ, granted_at=NOW, expires_at=NOW + timedelta(hours=1))

    async def order(sort: str, direction: str) -> list[int]:
        query = {"sort": sort, "order": direction}
        response = await pages.get("/admin/grants", params=query, headers=signed_in_as(ADA))
        return ids_on(html(response))

    assert await order("since", "asc") == [c, a, b, d]
    assert await order("since", "desc") == [d, b, a, c]
    assert await order("until", "asc") == [d, a, b, c]  # standing last, by id
    assert await order("until", "desc") == [a, d, c, b]  # standing last still, by id descending
    assert await order("user", "asc") == [b, d, a, c]  # the unlinked account last
    assert await order("user", "desc") == [a, d, b, c]
    assert await order("role", "asc") == [c, b, d, a]
    assert await order("role", "desc") == [a, d, b, c]


@pytest.mark.every_app_db
@pytest.mark.parametrize("sort", list(SortKey))
@pytest.mark.parametrize("descending", [False, True])
def test_cursor_pages_skip_and_repeat_nothing_across_ties(ledger: Settings, sort: SortKey, descending: bool) -> None:
    """Many grants share each sort key (and some have none): every page, three at a time, follows on exactly."""
    with session_scope(ledger.db_url) as session:
        for n in range(23):
            session.add(
                Grant(
                    account=f"acct{n % 4}",
                    role=f"ledger/prod-db/{'rw'[n % 2]}",
                    user_email=None if n % 5 == 0 else f"u{n % 3}@example.com",
                    granted_at=NOW - timedelta(hours=n % 3),
                    expires_at=None if n % 4 == 0 else NOW + timedelta(hours=n % 2),
                )
            )
    who = admin(ledger)
    everything = list_permissions(ledger, who, GrantFilter(), sort=sort, descending=descending, limit=100).grants
    seen, cursor, pages_read = [], None, 0
    while True:
        page = list_permissions(ledger, who, GrantFilter(), sort=sort, descending=descending, cursor=cursor, limit=3)
        seen += [g.id for g in page.grants]
        pages_read += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [g.id for g in everything] and len(set(seen)) == 23 and pages_read == 8


@pytest.mark.every_app_db
async def test_next_page_links_walk_the_whole_table(pages: httpx.AsyncClient, ledger: Settings) -> None:
    with session_scope(ledger.db_url) as session:
        for n in range(120):
            session.add(Grant(account=f"a{n}", role=READ, user_email=None, granted_at=NOW - timedelta(minutes=n % 2)))
    url, seen = "/admin/grants?role=ledger&sort=until&order=desc", []
    while url:
        text = html(await pages.get(url.replace("&amp;", "&"), headers=signed_in_as(ADA)))
        seen += ids_on(text)
        found = re.search(r'href="([^"]+)" rel="next"', text)
        url = found[1] if found else ""
    assert len(seen) == 120 and len(set(seen)) == 120


@pytest.mark.every_app_db
@pytest.mark.parametrize("part", ["r" * 120, "𝔸" * (MAX_ROLE_PATH - 10)], ids=["130-chars", "longest-astral"])
async def test_next_page_links_by_role_carry_long_role_paths(
    pages: httpx.AsyncClient, ledger: Settings, part: str
) -> None:
    """A cursor holds the last row's role path: a long one (of any script) still makes a link that pages on."""
    roles = [f"ledger/{part}/{n}" for n in range(2)]
    with session_scope(ledger.db_url) as session:
        for n in range(70):
            session.add(Grant(account=f"a{n}", role=roles[n % 2], user_email=None, granted_at=NOW))
    url, seen = "/admin/grants?sort=role", []
    while url:
        response = await pages.get(url.replace("&amp;", "&"), headers=signed_in_as(ADA))
        assert response.status_code == 200, response.text
        seen += ids_on(html(response))
        found = re.search(r'href="([^"]+)" rel="next"', response.text)
        url = found[1] if found else ""
    assert len(seen) == 70 and len(set(seen)) == 70


@pytest.mark.parametrize(
    "cursor",
    ["nonsense", "W10", "WyJzaW5jZSIsImFzYyIsZmFsc2UsIm5vdCBhIHRpbWUiLDFd", "WyJyb2xlIiwiYXNjIixmYWxzZSwieCIsMV0"],
)
async def test_a_bad_cursor_is_a_clear_422(pages: httpx.AsyncClient, cursor: str) -> None:
    """Not base64 JSON; not a position; a "since" position that is not a time; a cursor made for the role order."""
    response = await pages.get("/admin/grants", params={"cursor": cursor}, headers=signed_in_as(ADA))
    assert response.status_code == 422
    assert "cursor: this page link is not one the permissions table made for this order" in html(response)


async def test_bad_filters_are_422s_naming_the_field(pages: httpx.AsyncClient) -> None:
    for query, field in [({"path": "sideways"}, "path"), ({"expiring_before": "tomorrow"}, "expiring_before")]:
        response = await pages.get("/admin/grants", params=query, headers=signed_in_as(ADA))
        assert response.status_code == 422 and f"{field}: " in html(response), query
    assert GrantFilter.asked(expiring_before="2026-12-05").expiring_before == datetime(2026, 12, 5, tzinfo=UTC)


async def test_the_impact_page_says_what_each_revoke_does(pages: httpx.AsyncClient, ledger: Settings) -> None:
    with session_scope(ledger.db_url) as session:
        session.add(AccessRequest(id="req1", requester="alan@example.com", role=DEPLOY, state="active", created_at=NOW))
    jit = add(ledger, account="alan@example.com", role=DEPLOY, request_id="req1", expires_at=NOW + timedelta(hours=1))
    both = [add(ledger, account="ken@example.com", role=READ, path="external") for _ in range(2)]
    ended = add(ledger, account="svc", role=WRITE, path="external", active=False, ended_at=NOW)
    form = {"grant_id": [str(i) for i in [jit, *both, ended, 999999, jit]]}
    response = await pages.post("/admin/grants/impact", data=form, headers=signed_in_as(ADA))
    text = html(response)
    assert response.status_code == 200 and "<h1>Revoke 3 grants?</h1>" in text
    assert 'Its request <a href="/requests/req1">req1</a> (asked by alan@example.com) ends' in text
    # Both of ken's grants are selected: revoking them together takes the access away.
    assert text.count("The role is removed in the target (ledger).") == 2 and "The access stays" not in text
    assert "Already ended: nothing to do." in text and "There is no such grant: nothing to do." in text
    hidden = re.findall(r'<input type="hidden" name="grant_id" value="(\d+)">', text)
    assert hidden == [str(jit), *map(str, both)]  # each once, in order, only those still to revoke

    one = html(await pages.post("/admin/grants/impact", data={"grant_id": str(both[0])}, headers=signed_in_as(ADA)))
    assert f"grant {both[1]} also covers account ken@example.com" in one


async def test_a_selection_is_capped_and_not_empty(pages: httpx.AsyncClient) -> None:
    too_many = {"grant_id": [str(n) for n in range(1, MAX_SELECTION + 2)]}
    for path in ("/admin/grants/impact", "/admin/grants/revoke-selected"):
        response = await pages.post(path, data=too_many, headers=signed_in_as(ADA))
        assert response.status_code == 422
        assert f"{MAX_SELECTION + 1} grants are selected; revoke at most {MAX_SELECTION} at a time" in html(response)
        empty = await pages.post(path, data={}, headers=signed_in_as(ADA))
        assert empty.status_code == 422 and "select at least one grant" in html(empty)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/grants"), ("POST", "/admin/grants/impact"), ("POST", "/admin/grants/revoke-selected")],
)
async def test_a_non_admin_is_refused_every_permissions_route(pages: httpx.AsyncClient, method: str, path: str) -> None:
    response = await pages.request(
        method, path, data={"grant_id": "1"} if method == "POST" else None, headers=signed_in_as("alan@example.com")
    )
    assert response.status_code == 403 and "only admins can do this" in html(response)


@pytest.mark.every_app_db
@pytest.mark.parametrize("probe", [0, 1_000_000])
@pytest.mark.parametrize("sort", [SortKey.SINCE, SortKey.USER, SortKey.ROLE])
def test_expiring_before_under_another_order_reads_the_same_either_way(
    ledger: Settings, monkeypatch: pytest.MonkeyPatch, probe: int, sort: SortKey
) -> None:
    """SQLite reads a small "expiring before" range whole and walks the order's index for a large one (the
    ``PROBE`` between them moved here to take each way): the same grants, in the same order, on every page."""
    monkeypatch.setattr("store.grant_pages.PROBE", probe)
    with session_scope(ledger.db_url) as session:
        for n in range(20):
            session.add(
                Grant(
                    account=f"acct{n}",
                    role=[READ, WRITE, DEPLOY][n % 3],
                    user_email=None if n % 7 == 0 else f"u{n % 4}@example.com",
                    path=["jit", "birthright"][n % 2],
                    granted_at=NOW - timedelta(hours=n % 5),
                    expires_at=None if n % 2 else NOW + timedelta(hours=n),
                )
            )
    who, before = admin(ledger), NOW + timedelta(hours=15)
    for filters in (GrantFilter(expiring_before=before), GrantFilter(expiring_before=before, integration="ledger")):
        expected = [
            g.id
            for g in list_permissions(ledger, who, GrantFilter(), sort=sort, limit=100).grants
            if g.expires_at is not None and g.expires_at < before
        ]
        seen, cursor = [], None
        while True:
            page = list_permissions(ledger, who, filters, sort=sort, cursor=cursor, limit=2)
            seen += [g.id for g in page.grants]
            if not (cursor := page.next_cursor):
                break
        assert seen == expected and len(expected) == 8

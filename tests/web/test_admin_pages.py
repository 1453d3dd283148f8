"""The admin pages in a real browser: integrations (test, discover, JIT-only), birthright policies (a change
previewed, then saved), the directory sync, the audit log (filtered, its chain checked, downloaded as CSV), and
the admin menu from the keyboard; each page through axe-core at 1280 and 360 px. And over HTTP: nobody but an
admin gets any of them."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.postgres import PostgresServer
from starter.api.app import create_app
from starter.api.security import proxy_csrf_token
from starter.services import integrations
from starter.services.integrations import IntegrationCreate
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant
from tests.api.identities import NoTemporal
from tests.conftest import make_settings
from tests.support import NO_SCHEDULED_DISCOVERY
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits

ADMIN = "ada@example.com"

ADMIN_SECTION_PAGES = [
    ("GET", "/admin/integrations"),
    ("GET", "/admin/integrations/{name}"),
    ("GET", "/admin/integrations/{name}/status"),
    ("POST", "/admin/integrations/{name}/test"),
    ("POST", "/admin/integrations/{name}/discover"),
    ("POST", "/admin/integrations/{name}/jit-only"),
    ("GET", "/admin/birthright"),
    ("GET", "/admin/birthright/live"),
    ("POST", "/admin/birthright/sync"),
    ("GET", "/admin/birthright/new"),
    ("GET", "/admin/birthright/policies/{name}"),
    ("POST", "/admin/birthright/preview"),
    ("POST", "/admin/birthright/save"),
    ("POST", "/admin/birthright/policies/{name}/exceptions/{exception_id}/remove"),
    ("GET", "/admin/directory"),
    ("GET", "/admin/directory/live"),
    ("POST", "/admin/directory/sync"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/audit/verify"),
    ("GET", "/admin/audit.csv"),
    ("GET", "/admin/reviews"),
    ("GET", "/admin/reviews/new"),
    ("GET", "/admin/reviews/definitions/{name}"),
    ("POST", "/admin/reviews/preview"),
    ("POST", "/admin/reviews/save"),
    ("POST", "/admin/reviews/definitions/{name}/start"),
    ("POST", "/admin/reviews/definitions/{name}/delete"),
    ("GET", "/admin/reviews/campaigns/{campaign_id}"),
    ("POST", "/admin/reviews/campaigns/{campaign_id}/close"),
    ("GET", "/admin/reviews/campaigns/{campaign_id}/report"),
    ("GET", "/admin/reviews/campaigns/{campaign_id}/report.csv"),
    ("GET", "/admin/break-glass"),
    ("GET", "/admin/notifications"),
    ("POST", "/admin/notifications/test"),
    ("GET", "/admin/notifications/outbox/{row_id}"),
    ("GET", "/admin/notifications/preview"),
    ("GET", "/admin/notifications/preview/email"),
]
"""The integrations, birthright, directory and audit pages: admins only (``tests/web/test_pages.py``'s
``ADMIN_PAGES`` includes them)."""

MENU = [
    "Permissions",
    "Integrations",
    "Birthright",
    "Directory",
    "Audit log",
    "Access reviews",
    "Break-glass",
    "Notifications",
]


# --- over HTTP: admins only ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def offline(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The app on the demo organisation with no Temporal behind it: what would reach a workflow is a 503."""
    settings = make_settings(tmp_path, "127.0.0.1:1")
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield client, settings


@pytest.mark.parametrize(("method", "path"), ADMIN_SECTION_PAGES, ids=[f"{m} {p}" for m, p in ADMIN_SECTION_PAGES])
async def test_a_non_admin_gets_403_and_no_admin_menu(
    offline: tuple[httpx.AsyncClient, Settings], method: str, path: str
) -> None:
    http, settings = offline
    alan = "alan@example.com"
    headers = {"X-Forwarded-Email": alan, "X-CSRF-Token": proxy_csrf_token(settings, alan)}
    response = await http.request(method, path.replace("{name}", "ledger"), headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html") and "only admins can do this" in response.text
    assert "admin-menu" not in response.text and 'href="/admin/' not in response.text


async def test_an_admin_sees_every_admin_page_in_the_menu(offline: tuple[httpx.AsyncClient, Settings]) -> None:
    http, _ = offline
    text = (await http.get("/admin/audit", headers={"X-Forwarded-Email": ADMIN})).text
    menu = re.search(r'<details class="dropdown admin-menu">.*?</details>', text, re.S)
    assert menu is not None
    assert re.findall(r">([^<>]+)</a>", menu[0]) == MENU
    assert menu[0].count('aria-current="page"') == 1 and 'href="/admin/audit" aria-current="page"' in menu[0]


def _as_admin(settings: Settings) -> dict[str, str]:
    return {"X-Forwarded-Email": ADMIN, "X-CSRF-Token": proxy_csrf_token(settings, ADMIN)}


async def test_a_policy_is_previewed_for_deletion_then_deleted(offline: tuple[httpx.AsyncClient, Settings]) -> None:
    http, settings = offline
    headers = _as_admin(settings)
    new = {"action": "create", "name": "readers", "groups": "engineering", "roles": "ledger/prod-db/read"}
    saved = await http.post("/admin/birthright/save", data=new, headers=headers)
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/birthright?saved=readers"
    with session_scope(settings.db_url) as session:  # what the sync (no Temporal here) would have granted alan
        session.add(
            Grant(
                account="alan",
                role="ledger/prod-db/read",
                user_email="alan@example.com",
                path="birthright",
                policy="readers",
                granted_at=datetime.now(UTC),
            )
        )

    shown = await http.post("/admin/birthright/preview", data={"action": "delete", "name": "readers"}, headers=headers)
    assert shown.status_code == 200
    assert re.search(r"<strong>0</strong> grants gained,\s*<strong>1</strong> lost", shown.text)
    losses = re.search(r"<caption>Who loses which role</caption>.*?</table>", shown.text, re.S)
    assert losses is not None and "alan@example.com" in losses[0] and "ledger/prod-db/read" in losses[0]
    assert "Delete policy readers</button>" in shown.text
    assert "readers" in (await http.get("/admin/birthright", headers=headers)).text  # nothing saved yet

    deleted = await http.post("/admin/birthright/save", data={"action": "delete", "name": "readers"}, headers=headers)
    assert deleted.status_code == 303 and deleted.headers["location"] == "/admin/birthright?deleted=readers"
    page = (await http.get("/admin/birthright", headers=headers)).text
    assert "No birthright policy yet." in page


async def test_a_plain_form_shows_the_outcome_on_the_integrations_page(
    offline: tuple[httpx.AsyncClient, Settings],
) -> None:
    """Without htmx the Test button still answers: the integration's page, with why it was not done."""
    http, settings = offline
    answer = await http.post("/admin/integrations/ledger/test", headers=_as_admin(settings))
    assert answer.status_code == 503
    assert "<title>ledger · Integrations · Lapse</title>" in answer.text
    assert "Connection test not done:</strong> the workflow service is unavailable" in answer.text
    assert (await http.post("/admin/integrations/nope/test", headers=_as_admin(settings))).status_code == 404


# --- in the browser ------------------------------------------------------------------------------


async def both_widths(as_user, path: str, name: str, ready: str) -> None:  # type: ignore[no-untyped-def]
    """The page at desktop and phone width: axe-core finds nothing serious, nothing scrolls sideways."""
    for width in (1280, 360):
        visit = await as_user(ADMIN, width=width)
        page = await visit(path)
        await expect(page.locator(ready).first).to_be_visible()
        await check_accessibility(page, name if width > 400 else f"{name}-360px")
        await fits(page, width)
        await page.close()


@pytest.fixture
def pg_integration(
    postgres: PostgresServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, PostgresServer]:
    """A PostgreSQL integration's worth of roles in the shared cluster, named apart from other tests'."""
    suffix = uuid.uuid4().hex[:6]
    name, prefix = f"pg-{suffix}", f"w{suffix}_"
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {prefix}read NOLOGIN")
        admin.execute(f"CREATE ROLE {prefix}write NOLOGIN")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    return name, postgres


async def test_integrations_test_discover_and_jit_only(
    as_user, env: WorkflowEnvironment, settings: Settings, pg_integration: tuple[str, PostgresServer]
) -> None:
    name, _ = pg_integration
    with session_scope(settings.db_url, write=False) as session:
        ada = catalog.find_user(session, ADMIN)
    assert ada is not None
    body = IntegrationCreate.model_validate(
        {
            "name": name,
            "kind": "postgres",
            "config": {
                "dsn_env": "LAPSE_TEST_PG_DSN",
                "role_prefix": f"w{name[3:]}_",
                "resource": "app",
                "insecure": True,  # the test cluster speaks plaintext on loopback
            },
            "discovery_every": NO_SCHEDULED_DISCOVERY,
        }
    )
    await integrations.create_integration(env.client, settings, ada, body)
    try:
        await _integrations_flow(as_user, name)
    finally:
        with contextlib.suppress(RPCError):
            await env.client.get_schedule_handle(names.discovery_id(name)).delete()


async def _integrations_flow(as_user, name: str) -> None:  # type: ignore[no-untyped-def]
    await both_widths(as_user, "/admin/integrations", "admin-integrations", "article.integration")
    visit = await as_user(ADMIN)
    page = await visit("/admin/integrations")

    # The ledger's connection test runs on the worker (the test's fake target) and says so beside its button.
    ledger = page.locator("article.integration", has=page.locator("h2", has_text="ledger"))
    await expect(ledger.locator(".integration-status")).to_contain_text("nothing to discover")
    await ledger.get_by_role("button", name="Test connection to ledger").click()
    await expect(ledger.locator(".outcome")).to_contain_text("connected the test's fake target")

    # The PostgreSQL one: never discovered, then discovered from the page, and its status follows.
    pg = page.locator("article.integration", has=page.locator("h2", has_text=name))
    await expect(pg.locator(".integration-status")).to_contain_text("not discovered yet")
    await pg.get_by_role("button", name=f"Test connection to {name}").click()
    await expect(pg.locator(".outcome")).to_contain_text("connected PostgreSQL")
    await pg.get_by_role("button", name=f"Discover {name} now").click()
    await expect(pg.locator(".outcome")).to_contain_text("discovered 1 resources, 2 roles (2 new", timeout=30_000)
    await expect(pg.locator(".integration-status mark.state-active")).to_have_text("ok", timeout=15_000)
    await expect(pg.locator(".integration-status")).to_contain_text("2 roles (2 new, 0 missing)")
    await check_accessibility(page, "admin-integrations-discovered")

    # Its roles, each with its JIT-only switch: on, then off again, each change said and audited.
    await pg.get_by_role("link", name=f"Roles of {name}").click()
    await page.wait_for_url(re.compile(rf"/admin/integrations/{name}#roles$"))
    row = page.locator("tbody tr", has=page.locator("code", has_text=f"{name}/app/w"))
    await expect(row.first).to_contain_text("no")
    role = (await row.first.locator("th code").inner_text()).strip()
    await row.first.get_by_role("button", name=f"Make JIT-only {role}").click()
    await expect(page.locator(".notice")).to_contain_text(f"{role} is now JIT-only")
    await expect(page.locator("tbody tr", has=page.locator("code", has_text=role)).locator(".jit-state")).to_have_text(
        "yes"
    )
    await both_widths(as_user, f"/admin/integrations/{name}", "admin-integration", "#roles tbody tr")
    await page.get_by_role("button", name=f"Allow grants outside Lapse for {role}").click()
    await expect(page.locator(".notice")).to_contain_text(f"{role} is no longer JIT-only")

    # The ledger's roles show their owners and sensitivity.
    page = await visit("/admin/integrations/ledger")
    admin_row = page.locator("tbody tr", has=page.locator("code", has_text="ledger/prod-db/admin"))
    await expect(admin_row).to_contain_text("frances@example.com, radia@example.com")
    await expect(admin_row).to_contain_text("critical")

    # The audit log has both changes, newest first.
    page = await visit(f"/admin/audit?action=role.updated&target={role}")
    await expect(page.locator("tbody tr")).to_have_count(2)
    await expect(page.locator("tbody tr").first).to_contain_text('{"jit_only": false}')


async def _preview_new_policy(page: Page) -> None:
    await page.get_by_role("link", name="Add a policy").click()
    await page.get_by_label("Name").fill("engineers read")
    await page.get_by_label("Groups").fill("engineering")
    await page.get_by_label("Roles").fill("ledger/prod-db/read\nledger/billing-reports/viewer")
    await page.get_by_role("button", name="Preview the change").click()


async def test_a_birthright_policy_is_previewed_then_saved(as_user) -> None:  # type: ignore[no-untyped-def]
    await both_widths(as_user, "/admin/birthright", "admin-birthright", "#sync-live")
    for width in (360, 1280):
        visit = await as_user(ADMIN, width=width)
        page = await visit("/admin/birthright")
        await _preview_new_policy(page)
        preview = page.locator("section.preview")
        # The eight engineers gain both roles; nothing is saved yet.
        await expect(preview.locator("[role=status]")).to_contain_text("16 grants gained, 0 lost")
        await expect(preview.get_by_role("table", name="Who gains which role")).to_contain_text("alan@example.com")
        await check_accessibility(page, "admin-birthright-preview" if width > 400 else "admin-birthright-preview-360px")
        await fits(page, width)
    assert "engineers read" not in await (await visit("/admin/birthright")).content()

    page = await visit("/admin/birthright")
    await _preview_new_policy(page)
    await page.get_by_role("button", name="Save this change").click()
    await expect(page.locator(".notice")).to_contain_text("Policy engineers read was saved")
    policy = page.locator("tbody tr", has=page.locator("th", has_text="engineers read"))
    await expect(policy).to_contain_text("engineering")
    # The save started the sync: the page shows it done, and the grants it made, without a reload.
    await expect(page.locator("#sync-live mark.state-active")).to_have_text("done", timeout=30_000)

    # Edit: add finance; the preview says katherine gains both roles; then save.
    await policy.get_by_role("link", name="Edit engineers read").click()
    await page.get_by_label("Groups").fill("engineering\nfinance")
    await page.get_by_role("button", name="Preview the change").click()
    gains = page.get_by_role("table", name="Who gains which role")
    await expect(page.locator("section.preview [role=status]")).to_contain_text("2 grants gained, 0 lost")
    await expect(gains.locator("tbody tr")).to_have_count(2)
    await expect(gains).to_contain_text("katherine@example.com")
    await check_accessibility(page, "admin-birthright-edit-preview")
    await page.get_by_role("button", name="Save this change").click()
    await expect(page.locator(".notice")).to_contain_text("was saved")
    await expect(policy).to_contain_text("finance")

    # A group nobody has is refused before anything is saved, the form kept as typed.
    page = await visit("/admin/birthright/new")
    await page.get_by_label("Name").fill("nobody")
    await page.get_by_label("Groups").fill("no-such-group")
    await page.get_by_label("Roles").fill("ledger/prod-db/read")
    await page.get_by_role("button", name="Preview the change").click()
    await expect(page.locator("[role=alert]")).to_contain_text("no-such-group")
    await expect(page.get_by_label("Groups")).to_have_value("no-such-group")
    await expect(page.get_by_label("Groups")).to_have_attribute("aria-invalid", "true")


async def test_the_directory_sync_runs_from_its_page(as_user) -> None:  # type: ignore[no-untyped-def]
    await both_widths(as_user, "/admin/directory", "admin-directory", "#groups tbody tr")
    visit = await as_user(ADMIN)
    page = await visit("/admin/directory")
    engineering = page.locator("#groups tbody tr", has=page.locator("th", has_text="engineering"))
    await expect(engineering.locator("td").nth(1)).to_have_text("8")  # members
    await page.get_by_role("button", name="Sync the directory now").click()
    await expect(page.locator(".notice")).to_contain_text("The directory sync was started")
    await expect(page.locator("#sync-live mark.state-active")).to_have_text("done", timeout=30_000)
    await expect(page.locator("#sync-live")).to_contain_text("Next scheduled")
    await check_accessibility(page, "admin-directory-synced")


async def test_the_audit_log_filters_checks_and_downloads(as_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    visit = await as_user(ADMIN)
    # Something to find: two JIT-only changes and a birthright sync asked for.
    page = await visit("/admin/integrations/ledger")
    await page.get_by_role("button", name="Make JIT-only ledger/prod-db/read").click()
    await expect(page.locator(".notice")).to_contain_text("is now JIT-only")
    await page.get_by_role("button", name="Make JIT-only ledger/prod-db/write").click()
    await expect(page.locator(".notice")).to_contain_text("is now JIT-only")
    page = await visit("/admin/birthright")
    await page.get_by_role("button", name="Run the birthright sync now").click()
    await expect(page.locator(".notice")).to_contain_text("The birthright sync was started")

    await both_widths(as_user, "/admin/audit", "admin-audit", "tbody th")
    page = await visit("/admin/audit")
    await page.get_by_label("Action").fill("role.updated")
    await page.get_by_label("Actor").fill(ADMIN)
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"action=role.updated"))
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("ledger/prod-db/write")  # newest first
    await expect(rows.nth(1)).to_contain_text("ledger/prod-db/read")

    # A time range that ends before everything: nothing.
    await page.get_by_label("Until (UTC, not included)").fill("2001-01-01T00:00")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("No event matches")
    await page.get_by_label("Until (UTC, not included)").fill("")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(2)

    # The chain, checked from the page: intact up to the newest event.
    await page.get_by_role("button", name="Check the chain").click()
    await expect(page.locator("#chain-check")).to_contain_text("intact")
    await expect(page.locator("#chain-check")).to_contain_text(re.compile(r"All \d+ events check out, up to event \d+"))
    await check_accessibility(page, "admin-audit-checked")

    # The download: the filtered events only, as the page lists them.
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="Download these events as CSV").click()
    download = await downloading.value
    assert download.suggested_filename == "lapse-audit.csv"
    saved = tmp_path / "audit.csv"
    await download.save_as(saved)
    exported = list(csv.DictReader(io.StringIO(saved.read_text(), newline="")))
    assert [(r["actor"], r["action"], r["target"]) for r in exported] == [
        (ADMIN, "role.updated", "ledger/prod-db/write"),
        (ADMIN, "role.updated", "ledger/prod-db/read"),
    ]


async def test_the_admin_menu_works_from_the_keyboard(as_user) -> None:  # type: ignore[no-untyped-def]
    for width in (1280, 360):
        visit = await as_user(ADMIN, width=width)
        page = await visit("/admin/grants")
        summary = page.locator("details.admin-menu summary")
        await summary.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("details.admin-menu")).to_have_attribute("open", "")
        links = page.locator("details.admin-menu a")
        await expect(links).to_have_text(MENU)
        await expect(links.first).to_be_in_viewport()
        await expect(links.last).to_be_in_viewport()
        await fits(page, width)
        await page.keyboard.press("Escape")  # closes, and the focus is back on the menu
        await expect(page.locator("details.admin-menu")).not_to_have_attribute("open", "")
        await expect(summary).to_be_focused()
        await page.keyboard.press("Enter")
        for _ in range(4):  # Permissions is the first; Audit log the fifth
            await page.keyboard.press("Tab")
        await expect(page.locator(":focus")).to_have_text("Directory")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await page.wait_for_url(re.compile(r"/admin/audit$"))
        await expect(page.locator('details.admin-menu a[aria-current="page"]')).to_have_text("Audit log")
        await page.close()

"""The birthright admin page's exceptions, in a real browser: an exception a real access review made (its
campaign's workflow, the birthright sync) shows under its policy, with who made it, when, the campaign (a link)
and the reviewer's reason, on the policy's own page and in its preview; an admin removes it with the form, from
the keyboard, and the sync grants the role again. Each state through axe-core at 1280 and 360 px."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from starter.services import review_runs
from store.db import session_scope
from store.settings import Settings
from store.tables import BirthrightException
from tests.conftest import Api
from tests.e2e.test_review_campaigns import decide, define, items, settled
from tests.support import eventually
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits
from tests.workflows.test_birthright_sync import ADMIN, READ, birthright_grants, create_policy, schedules

__all__ = ["schedules"]  # the birthright tests' fixture: the sync schedules on this test's queue

KATHERINE = "katherine@example.com"  # the finance group's one member; Ada is her manager, so her reviewer
VIEWER = "ledger/billing-reports/viewer"
REMOVE = f"Remove the exception for {KATHERINE} on {VIEWER}"


async def _reviewed_away(api: Api, env: WorkflowEnvironment, settings: Settings) -> str:
    """Two policies; an access review revokes katherine's finance-viewer grant: the campaign's id."""
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    await create_policy(api, "finance-viewer", ["finance"], [VIEWER])
    define(settings, name="finance-review", scope={"paths": ["birthright"], "roles": [VIEWER]})
    campaign_id = await review_runs.start_campaign(env.client, settings, "finance-review", started_by=ADMIN)
    decide(settings, items(settings, campaign_id)[(KATHERINE, VIEWER)], "revoke", by=ADMIN, comment="left finance")
    await review_runs.close_now(env.client, settings, campaign_id, by=ADMIN)
    final = await settled(settings, campaign_id)
    assert final[(KATHERINE, VIEWER)].outcome == "exception"
    assert KATHERINE not in birthright_grants(settings, VIEWER)
    return campaign_id


async def test_an_exception_a_review_made_shows_under_its_policy_and_an_admin_removes_it(
    as_user: Any, api: Api, env: WorkflowEnvironment, schedules: None, settings: Settings, audit: Any
) -> None:
    campaign_id = await _reviewed_away(api, env, settings)

    for width in (1280, 360):
        visit = await as_user(ADMIN, width=width)
        page = await visit("/admin/birthright")
        suffix = "" if width > 400 else "-360px"
        # Under its policy, and only there: who, which role, who made it and when, the campaign, the reason.
        table = page.get_by_role("table", name="Exceptions to finance-viewer")
        row = table.locator("tbody tr")
        await expect(row).to_have_count(1)
        await expect(row.locator("th")).to_have_text(KATHERINE)
        for shown in (VIEWER, ADMIN, "left finance", " UTC"):
            await expect(row).to_contain_text(shown)
        await expect(row).not_to_contain_text(f"access review {campaign_id}:")  # the campaign is linked beside it
        campaign = row.get_by_role("link", name=campaign_id)
        await expect(campaign).to_have_attribute("href", f"/admin/reviews/campaigns/{campaign_id}")
        await expect(page.get_by_role("table", name="Exceptions to engineering-read")).to_have_count(0)
        # The policies' table points at them from the policy's row.
        await page.get_by_role("link", name="1 exception to finance-viewer").click()
        await expect(page).to_have_url(f"{page.url.split('#')[0]}#exceptions-1")
        await check_accessibility(page, f"admin-birthright-exceptions{suffix}")
        await fits(page, width)

        # The policy's page says so, and its preview lists who it does not grant to because of an exception.
        await page.get_by_role("link", name="Edit finance-viewer").click()
        await expect(page.locator("main")).to_contain_text(
            f"An access review revoked them, so this policy no longer grants {VIEWER} to {KATHERINE}"
        )
        await page.get_by_role("button", name="Preview the change").click()
        excepted = page.get_by_role("table", name="Not granted because of an exception (an access review revoked it)")
        await expect(excepted.locator("tbody tr")).to_have_count(1)
        await expect(excepted).to_contain_text(KATHERINE)
        await expect(excepted).to_contain_text("finance-viewer")
        await expect(page.locator("section.preview [role=status]")).to_contain_text("0 grants gained, 0 lost")
        await check_accessibility(page, f"admin-birthright-exception-preview{suffix}")
        await fits(page, width)
        await page.close()

    # The campaign link leads to the campaign that made it.
    visit = await as_user(ADMIN, width=360)
    page = await visit("/admin/birthright")
    await page.get_by_role("table", name="Exceptions to finance-viewer").get_by_role("link", name=campaign_id).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(campaign_id)

    # Removed with the form, from the keyboard, on a phone: audited, and the sync grants the role again.
    page = await visit("/admin/birthright")
    await page.get_by_role("button", name=REMOVE).focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text(
        f"The exception was removed: {KATHERINE} ({VIEWER}) gets the role again"
    )
    await expect(page.locator("#exceptions")).to_have_count(0)
    await expect(page.get_by_role("link", name="1 exception to finance-viewer")).to_have_count(0)
    await check_accessibility(page, "admin-birthright-exception-removed-360px")
    await fits(page, 360)
    with session_scope(settings.db_url, write=False) as session:
        assert session.exec(select(BirthrightException).order_by(col(BirthrightException.id))).all() == []
    (removed,) = [e for e in audit("finance-viewer") if e.action == "birthright_exception.removed"]
    assert (removed.actor, removed.details["user"], removed.details["campaign_id"]) == (ADMIN, KATHERINE, campaign_id)
    await eventually(
        lambda: birthright_grants(settings, VIEWER),
        until=lambda held: held.get(KATHERINE) == "finance-viewer",
        what=f"the sync to grant {VIEWER} to {KATHERINE} again",
    )
    desktop = await (await as_user(ADMIN))(page.url.removeprefix(page.url.split("/admin")[0]))
    await expect(desktop.locator(".notice")).to_contain_text("The exception was removed")
    await check_accessibility(desktop, "admin-birthright-exception-removed")

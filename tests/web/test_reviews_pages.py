"""The Reviews pages in a real browser: a reviewer chooses items, holds a decision as a draft and submits it; an
admin previews a definition before saving it, follows a campaign and prints its report; each page through
axe-core at 1280 and 360 px, none scrolling sideways. Campaigns are made in the app DB (the workflow's side is
tested with it)."""

from __future__ import annotations

from playwright.async_api import expect
from sqlmodel import select

from store.db import session_scope
from store.settings import Settings
from store.tables import ReviewDefinitionRow, ReviewItem
from tests.api.review_fixtures import CAMPAIGN, linus_campaign
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits

WIDTHS = (1280, 360)


async def test_a_reviewer_drafts_and_submits_decisions(as_user, settings: Settings) -> None:
    ids = linus_campaign(settings)
    for width in WIDTHS:
        visit = await as_user("linus@example.com", width=width)
        page = await visit("/reviews")
        await expect(page.get_by_role("heading", name="Reviews", exact=True)).to_be_visible()
        await expect(page.locator("tbody")).to_contain_text("Alan Turing")
        await expect(page.locator("tbody")).not_to_contain_text("ledger/billing-reports/viewer")  # his own
        await expect(page.locator("tbody")).to_contain_text("unknown")
        await fits(page, width)
        await check_accessibility(page, f"reviews-{width}")
    page = await visit("/reviews")
    await page.locator(f"#item-{ids['alan-read']}").check()
    await page.locator(f"#item-{ids['barbara-write']}").check()
    await page.get_by_label("Revoke", exact=True).check()
    await page.get_by_label("Comment (required to revoke").fill("moved to another team")
    await page.get_by_role("button", name="Hold as draft").click()
    await expect(page.locator(".notice")).to_contain_text("2 items drafted as revoke")
    await check_accessibility(page, "reviews-drafted-360")
    await page.get_by_role("button", name="Submit 2 drafts").click()
    await expect(page.locator(".notice")).to_contain_text("2 decisions recorded")
    with session_scope(settings.db_url, write=False) as session:
        decided = session.exec(select(ReviewItem).where(ReviewItem.state == "decided")).all()
    assert sorted(i.id or 0 for i in decided) == sorted([ids["alan-read"], ids["barbara-write"]])
    assert {i.comment for i in decided} == {"moved to another team"}
    # Reassigning: only eligible people are offered.
    page = await visit(f"/reviews/items/{ids['alan-external']}/reassign")
    await expect(page.locator("#r-to option")).to_have_text(["ada@example.com"])
    await check_accessibility(page, "reviews-reassign-360")
    await page.get_by_role("button", name="Reassign").click()
    await expect(page.locator(".notice")).to_contain_text("is now ada@example.com's to review")


async def test_an_admin_previews_saves_and_reports(as_user, settings: Settings) -> None:
    linus_campaign(settings)
    for width in WIDTHS:
        visit = await as_user("ada@example.com", width=width)
        page = await visit("/admin/reviews/new")
        await page.get_by_label("Name", exact=True).fill(f"quarterly-{width}")
        await page.get_by_label("Integrations").fill("ledger")
        await page.get_by_role("button", name="Preview").click()
        await expect(page.locator("#preview-title")).to_be_visible()
        await fits(page, width)
        await check_accessibility(page, f"admin-review-preview-{width}")
        await page.get_by_role("button", name="Save this definition").click()
        await expect(page.locator(".notice")).to_contain_text(f"quarterly-{width} was saved")
        await fits(page, width)
        await check_accessibility(page, f"admin-reviews-{width}")
        page = await visit(f"/admin/reviews/campaigns/{CAMPAIGN}")
        await expect(page.locator("tbody")).to_contain_text("linus@example.com")
        await fits(page, width)
        await check_accessibility(page, f"admin-review-campaign-{width}")
        page = await visit(f"/admin/reviews/campaigns/{CAMPAIGN}/report")
        digest = await page.locator("code.digest").first.text_content()
        assert digest is not None and len(digest) == 64
        await fits(page, width)
        await check_accessibility(page, f"admin-review-report-{width}")
    with session_scope(settings.db_url, write=False) as session:
        names = sorted(session.exec(select(ReviewDefinitionRow.name)))
    assert names == ["quarterly-1280", "quarterly-360"]

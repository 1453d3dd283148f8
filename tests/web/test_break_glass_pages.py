"""Break-glass in the browser: the catalog's form asks for emergency access on a role that allows it, the request
page shows a loud banner with the review's state and, to a reviewer, the confirm/condemn form; a condemn there
flags it and revokes the grant; the admins' page lists it first. axe-core at desktop and phone width."""

from __future__ import annotations

from playwright.async_api import expect

from tests.conftest import Api
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits

ROLE = "ledger/prod-db/write"


async def test_ask_review_and_list_an_emergency_in_the_browser(api: Api, as_user) -> None:
    linus = await as_user("linus@example.com")
    page = await linus("/")
    await page.select_option("#role", ROLE)
    await page.fill("#duration", "PT20M")
    await page.fill("#justification", "prod is down, INC-7 <b>now</b>")
    await page.check("#emergency")
    await page.click("#request-form button[type=submit]")
    banner = page.locator(".break-glass")
    await expect(banner).to_contain_text("Emergency access (break-glass)")
    await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)
    await expect(banner).to_contain_text("open", timeout=15_000)
    await expect(banner.locator("form")).to_have_count(0)  # no review of one's own
    request_id = page.url.rsplit("/", 1)[1].split("?")[0]
    await check_accessibility(page, "break-glass request, requester")

    for width in (1280, 360):
        grace = await as_user("grace@example.com", width=width)
        page = await grace(f"/requests/{request_id}")
        await expect(page.locator(".break-glass form")).to_be_visible()
        await fits(page, width)
        await check_accessibility(page, f"break-glass request, reviewer, {width}px")

    await page.fill(f"#break-glass-comment-{request_id}", "no incident INC-7 on record")
    await page.click(".break-glass button[value=condemn]")
    banner = page.locator(".break-glass")
    await expect(banner).to_contain_text("condemned")
    await expect(banner.locator("[role=alert]")).to_contain_text("Flagged")
    await expect(page.locator(".status-line")).to_contain_text("revoked", timeout=15_000)
    await check_accessibility(page, "break-glass request, condemned")

    for width in (1280, 360):
        ada = await as_user("ada@example.com", width=width)
        page = await ada("/admin/break-glass")
        first = page.locator("tbody tr").first
        await expect(first).to_contain_text(request_id)
        await expect(first).to_contain_text("Flagged")
        await expect(first).to_contain_text("prod is down, INC-7 <b>now</b>")  # text, not markup
        await fits(page, width)
        await check_accessibility(page, f"admin break-glass, {width}px")

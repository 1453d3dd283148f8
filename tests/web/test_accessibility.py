"""Every page, as its users see it, through axe-core: no serious or critical violation, at desktop width and at
360 px (where nothing may make the page scroll sideways); screenshots of each for CI; and the request form used
with the keyboard alone."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.web.conftest import check_accessibility
from tests.web.test_request_flow import request_role


async def fits(page: Page, width: int) -> None:
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide at {width} px: it scrolls sideways"


async def test_every_page_passes_axe_at_desktop_and_phone_width(as_user) -> None:
    # Something on every page: an active grant (katherine), a pending request for linus to decide (alan).
    katherine = await as_user("katherine@example.com")
    page = await katherine("/")
    granted = await request_role(page, "ledger/prod-db/read", "PT30M", "", verdict="Granted without approval")
    await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)
    alan = await as_user("alan@example.com")
    page = await alan("/")
    pending = await request_role(page, "ledger/payments-api/deploy", "PT1H", "<i>hotfix</i>", verdict="linus")

    pages = {
        "catalog": ("alan@example.com", "/?role=ledger/payments-api/deploy", "#verdict p"),
        "catalog-filtered": ("alan@example.com", "/?q=prod-db&sensitivity=low", "article.role"),
        "my-access": ("katherine@example.com", "/access", "article.grant .countdown"),
        "my-access-waiting": ("alan@example.com", "/access", "#open-title"),
        "approvals": ("linus@example.com", "/approvals", f"#card-{pending}"),
        "request-pending": ("alan@example.com", f"/requests/{pending}", ".status-line"),
        "request-active-admin": ("ada@example.com", f"/requests/{granted}", "text=Temporal Web UI"),
        "permissions": ("ada@example.com", "/admin/grants", "tbody th"),
        "forbidden": ("alan@example.com", "/admin/grants", "[role=alert]"),
    }
    for width in (1280, 360):
        visitors = {}
        for name, (who, path, ready) in pages.items():
            key = (who, width)
            if key not in visitors:
                visitors[key] = await as_user(who, width=width)
            shown = await visitors[key](path)
            await expect(shown.locator(ready).first).to_be_visible()
            await check_accessibility(shown, name if width > 400 else f"{name}-360px")
            await fits(shown, width)
            await shown.close()


async def test_the_request_form_works_from_the_keyboard(as_user) -> None:
    alan = await as_user("alan@example.com")
    page = await alan("/")
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_text("Skip to content")
    await page.keyboard.press("Enter")
    await page.focus("#role")
    await page.keyboard.type("ledger/payments-api/deploy")
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_id("duration")
    await page.keyboard.type("PT2H")
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_id("justification")
    await page.keyboard.type("by keyboard")
    await expect(page.locator("#verdict")).to_contain_text("linus@example.com")
    await page.keyboard.press("Tab")  # the break-glass switch, left off: an ordinary request
    await expect(page.locator(":focus")).to_have_id("emergency")
    await expect(page.locator("#emergency")).not_to_be_checked()
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_text("Request")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/requests/\w+\?done=requested$"))
    await expect(page.locator(".justification")).to_have_text("by keyboard")

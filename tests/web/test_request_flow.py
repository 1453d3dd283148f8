"""The web UI end to end in Chromium: request, approve in another browser, watch the grant start and lapse
without a reload; deny with a comment; extend and give back; user text shown as text."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

XSS = "<script>window.pwned = 1</script> INC-7 & <b>bold</b>"


async def request_role(page: Page, role: str, duration: str, justification: str, *, verdict: str) -> str:
    """Fill in the request form, wait for the policy's dry run to say ``verdict``, submit; the request's id."""
    await page.get_by_label("Role", exact=True).select_option(role)
    await page.get_by_label("Duration").fill(duration)
    await page.get_by_label("Justification").fill(justification)
    await expect(page.locator("#verdict")).to_contain_text(verdict)
    await page.get_by_role("button", name="Request", exact=True).click()
    await page.wait_for_url(re.compile(r"/requests/\w+\?done=requested$"))
    return page.url.rsplit("/", 1)[1].split("?")[0]


async def mark(page: Page) -> None:
    """Leave a mark in the page's JavaScript state: a reload would wipe it."""
    await page.evaluate("window.notReloaded = true")


async def not_reloaded(page: Page) -> bool:
    return bool(await page.evaluate("window.notReloaded === true"))


async def test_approved_request_turns_active_and_lapses_without_a_reload(as_user) -> None:
    alan = await as_user("alan@example.com")
    page = await alan("/?role=ledger/payments-api/deploy")
    request_id = await request_role(
        page, "ledger/payments-api/deploy", "PT8S", XSS, verdict="manager: 1 of linus@example.com"
    )
    status = page.locator(".status-line")
    await expect(status).to_contain_text("pending")
    await expect(page.locator(".justification")).to_have_text(XSS)  # shown as text, not run
    await mark(page)

    linus = await as_user("linus@example.com")
    approvals = await linus("/approvals")
    card = approvals.locator(f"#card-{request_id}")
    await expect(card).to_contain_text("alan@example.com")
    await expect(card.locator(".justification")).to_have_text(XSS)
    assert await approvals.evaluate("window.pwned") is None
    await card.get_by_label("Comment").fill("go ahead")
    await card.get_by_role("button", name="Approve").click()
    await approvals.wait_for_url(re.compile(rf"/requests/{request_id}\?done=approved$"))
    await expect(approvals.locator(".notice")).to_have_text("You approved it.")
    await expect(approvals.locator(".steps")).to_contain_text("linus@example.com approved")

    # The requester's page, left open, shows the grant, then its end: polled, never reloaded.
    await expect(status).to_contain_text("active", timeout=15_000)
    await expect(page.locator(".facts .countdown")).to_contain_text(re.compile(r"\d+s left|time is up"))
    await expect(status).to_contain_text("expired", timeout=25_000)
    await expect(page.locator(".timeline")).to_contain_text("go ahead")
    assert await not_reloaded(page)
    assert await page.evaluate("window.pwned") is None
    assert not page.errors, page.errors  # type: ignore[attr-defined]


async def test_deny_with_a_comment_shows_on_the_requesters_page(as_user) -> None:
    alan = await as_user("alan@example.com")
    page = await alan("/")
    request_id = await request_role(page, "ledger/payments-api/deploy", "PT1H", "deploy fix", verdict="linus")
    await mark(page)

    linus = await as_user("linus@example.com")
    approvals = await linus("/approvals")
    card = approvals.locator(f"#card-{request_id}")
    await card.get_by_label("Comment").fill("not during the freeze <b>")
    await card.get_by_role("button", name="Deny").click()
    await expect(approvals.locator(".notice")).to_have_text("You denied it.")

    await expect(page.locator(".status-line")).to_contain_text("denied", timeout=15_000)
    await expect(page.locator(".steps")).to_contain_text("linus@example.com denied")
    await expect(page.locator(".steps q")).to_have_text("not during the freeze <b>")
    assert await not_reloaded(page)


async def test_approvals_list_follows_requests_made_and_withdrawn_elsewhere(as_user) -> None:
    linus = await as_user("linus@example.com")
    approvals = await linus("/approvals")
    await expect(approvals.locator("#approvals-live")).to_contain_text("Nothing is waiting for your decision.")
    await mark(approvals)

    alan = await as_user("alan@example.com")
    page = await alan("/")
    request_id = await request_role(page, "ledger/payments-api/deploy", "PT1H", "for the list", verdict="linus")
    card = approvals.locator(f"#card-{request_id}")
    await expect(card).to_contain_text("for the list", timeout=15_000)
    await card.get_by_label("Comment").fill("half-typed")

    # Another request refreshes the list: the comment being typed on the first card stays.
    page = await alan("/")
    second = await request_role(page, "ledger/payments-api/deploy", "PT2H", "another", verdict="linus")
    await expect(approvals.locator(f"#card-{second}")).to_be_visible(timeout=15_000)
    await expect(card.get_by_label("Comment")).to_have_value("half-typed")

    for _ in range(2):
        mine = await alan("/access")
        await mine.get_by_role("button", name="Withdraw").first.click()
        await expect(mine.locator(".status-line")).to_contain_text("cancelled")
    await expect(card).to_have_count(0, timeout=15_000)
    await expect(approvals.locator("#approvals-live")).to_contain_text("Nothing is waiting for your decision.")
    assert await not_reloaded(approvals)


async def test_extend_then_give_back_from_my_access(as_user) -> None:
    katherine = await as_user("katherine@example.com")
    page = await katherine("/")
    request_id = await request_role(
        page, "ledger/prod-db/read", "PT10M", "", verdict="Granted without approval (rule quick look"
    )
    await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)

    mine = await katherine("/access")
    grant = mine.locator("article.grant", has_text="ledger/prod-db/read")
    await expect(grant.locator(".countdown")).to_contain_text(re.compile(r"9m \d+s left"))
    await grant.get_by_label("Extend by").fill("PT5M")
    await grant.get_by_role("button", name="Extend").click()
    await mine.wait_for_url(re.compile(rf"/requests/{request_id}\?done=extended$"))
    await expect(mine.locator("#extensions-title + article")).to_contain_text("approved")

    mine = await katherine("/access")
    grant = mine.locator("article.grant", has_text="ledger/prod-db/read")
    await expect(grant.locator(".countdown")).to_contain_text(re.compile(r"1[34]m \d+s left"))
    await grant.get_by_role("button", name="Give back now").click()
    await expect(mine.locator(".notice")).to_have_text("You gave the access back.")
    await expect(mine.locator(".status-line")).to_contain_text("revoked")

    mine = await katherine("/access")
    await expect(mine.locator("#access-live")).to_contain_text("You hold nothing right now.")


async def test_an_extension_beyond_the_policy_is_refused_with_its_reason(as_user) -> None:
    katherine = await as_user("katherine@example.com")
    page = await katherine("/")
    await request_role(page, "ledger/prod-db/read", "PT10M", "", verdict="Granted without approval")
    await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)
    mine = await katherine("/access")
    grant = mine.locator("article.grant", has_text="ledger/prod-db/read")
    await grant.get_by_label("Extend by").fill("P1D")
    await grant.get_by_role("button", name="Extend").click()
    await expect(mine.locator("h1")).to_have_text(re.compile("Unprocessable"))
    await expect(mine.get_by_role("alert")).to_contain_text("longer than")

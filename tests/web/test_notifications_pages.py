"""Notifications in the browser: a person's channels on their settings page, and a request page's list of who
was told what, with a message that could not be sent shown as such. Each at desktop and phone width, with axe."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from playwright.async_api import expect
from sqlmodel import select

from store import notifications as outbox
from store.db import session_scope
from store.settings import Settings
from store.tables import Notification
from tests.support import eventually
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits


async def test_a_person_chooses_their_channels_on_their_settings_page(as_user, settings: Settings) -> None:
    for width in (1280, 360):
        alan = await as_user("alan@example.com", width=width)
        page = await alan("/tokens")
        block = page.locator("#notifications")
        await expect(block.get_by_role("heading", name="Notifications")).to_be_visible()
        await expect(block).to_contain_text("You are told by email (your organisation's default)")
        await check_accessibility(page, "settings-notifications" if width > 400 else "settings-notifications-360px")
        await fits(page, width)

        await block.get_by_label("only what I tick here").check()
        await block.get_by_role("checkbox", name="Email").uncheck()
        await block.get_by_role("button", name="Save").click()
        await expect(page.locator(".notice")).to_contain_text("Your notification channels were saved")
        await expect(page.locator("#notifications")).to_contain_text("You are told by nothing")

        await page.locator("#notifications").get_by_label("the organisation's default").check()
        await page.locator("#notifications").get_by_role("button", name="Save").click()
        await expect(page.locator("#notifications")).to_contain_text("(your organisation's default)")
        assert not page.errors  # type: ignore[attr-defined]
        await page.close()
    with session_scope(settings.db_url, write=False) as session:
        assert outbox.preference(session, "alan@example.com") is None


async def test_the_request_page_lists_who_was_told_and_what_failed(as_user, web: str, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=web, headers={"X-Forwarded-Email": "alan@example.com"}) as api:
        made = await api.post(
            "/api/requests",
            json={"role": "ledger/payments-api/deploy", "duration": "PT1H", "justification": "release"},
        )
        assert made.status_code == 201, made.text
    request_id = made.json()["id"]

    def rows() -> list[Notification]:
        with session_scope(settings.db_url, write=False) as session:
            return list(session.exec(select(Notification).where(Notification.subject == request_id)))

    queued = await eventually(rows, until=lambda found: len(found) >= 1, what="linus's email queued")
    with session_scope(settings.db_url) as session:  # as the dispatcher records a send it gave up on
        outbox.mark_failed(
            session, queued[0].id or 0, why="mail.example.com refused us", attempts=24, now=datetime.now(UTC)
        )

    for width in (1280, 360):
        alan = await as_user("alan@example.com", width=width)
        page = await alan(f"/requests/{request_id}")
        section = page.locator("section", has=page.get_by_role("heading", name="Notifications"))
        await expect(section).to_contain_text("1 message could not be sent")
        await expect(section).to_contain_text("linus@example.com")
        await expect(section).to_contain_text("mail.example.com refused us")
        await expect(section).to_contain_text("not sent after 24 tries")
        await check_accessibility(page, "request-notifications" if width > 400 else "request-notifications-360px")
        await fits(page, width)
        await page.close()

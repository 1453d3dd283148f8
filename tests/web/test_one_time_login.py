"""A grant's one-time login in the browser, on a real PostgreSQL: requested from the catalog, shown once on My
access with working copy buttons, refused the second time, and a login that really works until the grant ends."""

from __future__ import annotations

import psycopg
from playwright.async_api import expect

from harness.postgres import PostgresServer
from tests.e2e.test_ephemeral_credentials import pg_role  # noqa: F401  (the fixture: an ephemeral-login role)
from tests.web.conftest import check_accessibility
from tests.web.test_request_flow import request_role

REQUESTER = "katherine@example.com"


async def test_the_one_time_login_is_shown_once_copied_and_works(
    as_user,
    pg_role: str,  # noqa: F811  (the imported fixture)
    postgres: PostgresServer,
) -> None:
    katherine = await as_user(REQUESTER)
    page = await katherine(f"/?role={pg_role}")
    request_id = await request_role(page, pg_role, "PT10M", "monthly report", verdict="Granted without approval")
    await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)

    access = await katherine("/access")
    reveal = access.get_by_role("button", name=f"Show my one-time login (katherine_{request_id})")
    await reveal.click()
    await expect(access.get_by_role("heading", name=f"One-time login for request {request_id}")).to_be_visible()
    login = await access.locator("#login").text_content()
    password = await access.locator("#password").text_content()
    assert login == f"katherine_{request_id}" and password
    await check_accessibility(access, "one-time-login")

    await access.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy = access.locator('button[data-copy="password"]')
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await access.evaluate("navigator.clipboard.readText()") == password

    # The target takes it: a real login to PostgreSQL with what the page showed.
    with psycopg.connect(postgres.dsn(login, password=password), autocommit=True) as session:
        session.execute("SET ROLE reports_read")
        assert session.execute("SELECT count(*) FROM reports").fetchone() == (0,)

    # Asking again is refused, and the password is nowhere on that page or on My access.
    again = await katherine("/access")
    await again.get_by_role("button", name=f"Show my one-time login (katherine_{request_id})").click()
    await expect(again.get_by_text("already shown")).to_be_visible()
    assert password not in await again.content()
    assert password not in await (await katherine("/access")).content()

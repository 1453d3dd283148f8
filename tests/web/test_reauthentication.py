"""A re-authentication demanded for a ``reauthenticate_within`` workflow, in Chromium, signing in through the demo's
real OIDC provider: an approver whose sign-in is older than the workflow allows is sent back to the provider
(``max_age``), comes back to the request's page and approves there; the request turns active."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from harness.ports import free_port
from starter.api.app import create_app
from starter.demo_provider import CLIENT_ID, DemoProvider
from starter.services.sessions import COOKIE_NAME, session_user
from store.db import session_scope
from store.settings import Settings
from store.tables import WebSession
from tests.api.identities import mint
from tests.api.test_reauthentication import FRESH_SIGN_IN, KEN, MARGARET, ROLE
from tests.conftest import clear_sync_schedules, load_into
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits
from tests.web.test_sign_in import no_cdn, provider  # noqa: F401  (the demo's provider, started once)


@pytest.fixture
def settings_overrides(tmp_path: Path, provider: DemoProvider) -> dict[str, Any]:  # noqa: F811
    secret = tmp_path / "oidc-client-secret"
    secret.write_text("the-demo-provider-takes-any-secret\n")
    port = free_port()  # the app's public URL, which the provider sends the browser back to, is fixed before it runs
    return {
        "auth": "oidc",
        "oidc_issuer": provider.url,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret_file": secret,
        "api_port": port,
        "public_url": f"http://127.0.0.1:{port}",
    }


@pytest_asyncio.fixture
async def served(env: WorkflowEnvironment, settings: Settings, worker: None) -> AsyncIterator[str]:
    """The app with Temporal behind it, over HTTP at its public URL, with ``fresh-sign-in`` on ``ROLE``."""
    load_into(settings, FRESH_SIGN_IN)
    app = create_app(settings, client=env.client)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    yield settings.external_url
    server.should_exit = True
    await serving
    await clear_sync_schedules(env.client)


async def pick_at_provider(page: Page, email: str) -> None:
    """On the provider's authorization page: be ``email``."""
    await page.get_by_role("button", name=email).click()


def age_sessions(settings: Settings, email: str, by: timedelta) -> None:
    """Make ``email``'s sessions' sign-in at the provider ``by`` old (as if signed in that long ago)."""
    with session_scope(settings.db_url) as session:
        session.exec(  # type: ignore[call-overload]
            update(WebSession).where(col(WebSession.email) == email).values(auth_time=datetime.now(UTC) - by)
        )


async def test_an_approver_signed_in_too_long_ago_signs_in_again_then_approves(
    browser: Browser, served: str, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as api:
        made = await api.post(
            "/api/requests",
            json={"role": ROLE, "duration": "PT1H", "justification": "hotfix"},
            headers={"Authorization": f"Bearer {mint(settings, KEN, 'request')}"},
        )
    assert made.status_code == 201, made.text
    request_id = made.json()["id"]

    context = await browser.new_context(base_url=served, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    await context.route(re.compile(r"^https://"), no_cdn)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda m: (
                errors.append(m.text) if m.type == "error" and m.location.get("url", "").startswith(served) else None
            ),
        )
        page.errors = errors  # type: ignore[attr-defined]

        # Margaret signed in this morning, through the provider.
        await page.goto(f"/auth/login?next=/requests/{request_id}")
        await pick_at_provider(page, MARGARET)
        await page.wait_for_url(f"{served}/requests/{request_id}")
        age_sessions(settings, MARGARET, timedelta(hours=3))
        await page.goto("/approvals")
        await expect(page.locator(f"#card-{request_id}")).to_contain_text("needs a sign-in within the last PT10M")
        await page.goto(f"/requests/{request_id}")

        # The request's page offers her the decision, and says it needs a recent sign-in.
        decide = page.get_by_role("region", name="Your decision")
        await expect(decide).to_contain_text("sign-in within the last PT10M")
        await expect(page.locator(".facts")).to_contain_text("need a sign-in within PT10M")
        await check_accessibility(page, "request-decide-reauthenticate")
        await decide.get_by_label("Comment").fill("looks right")
        # Hold the way to the provider once, to look at the page that says why it goes there.
        to_sign_in = re.compile(r"/auth/login\?max_age=600")
        await context.route(to_sign_in, lambda route: route.fulfill(status=204))  # 204: the browser stays
        await decide.get_by_role("button", name="Approve").click()
        await page.get_by_role("heading", name="Sign in again to do this").wait_for()
        await expect(page.get_by_role("status")).to_contain_text("within the last PT10M")
        errors.clear()  # the page's own 401, and the held navigation
        await check_accessibility(page, "reauthenticate")
        await context.unroute(to_sign_in)

        # Her sign-in is too old: the provider is asked for a fresh one (max_age), and she picks herself again.
        await page.get_by_role("button", name="Sign in again").click()
        await page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/oauth2/authorize\?"))
        asked = parse_qs(urlsplit(page.url).query)
        assert asked["max_age"] == ["600"], page.url
        await pick_at_provider(page, MARGARET)

        # Back on the request's page, nothing decided yet: she approves again, and it counts.
        await page.wait_for_url(f"{served}/requests/{request_id}")
        await expect(page.locator(".status-line")).to_contain_text("pending")
        assert not errors, errors
        await check_accessibility(page, "request-back-after-reauthentication")
        cookie = next(c for c in await context.cookies() if c["name"] == COOKIE_NAME)
        signed_in = session_user(settings, cookie["value"])
        assert signed_in is not None and signed_in.auth_time is not None
        assert datetime.now(UTC) - signed_in.auth_time < timedelta(minutes=1)

        await page.set_viewport_size({"width": 360, "height": 900})
        await fits(page, 360)
        await check_accessibility(page, "request-back-after-reauthentication-360px")
        await page.set_viewport_size({"width": 1280, "height": 900})
        decide = page.get_by_role("region", name="Your decision")
        await decide.get_by_label("Comment").fill("looks right, signed in again")
        await decide.get_by_role("button", name="Approve").click()
        await page.wait_for_url(f"{served}/requests/{request_id}?done=approved")
        await expect(page.locator(".notice")).to_have_text("You approved it.")
        await expect(page.locator(".status-line")).to_contain_text("active", timeout=15_000)
        await expect(page.locator(".steps")).to_contain_text("looks right, signed in again")
        await check_accessibility(page, "request-approved-after-reauthentication")
    finally:
        await context.close()

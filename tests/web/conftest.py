"""The web UI in a real browser: Debian's Chromium driven by Playwright, against the app served by uvicorn on
a free port, over the test Temporal dev server and an in-process worker (``tests/conftest.py``).

One browser for the whole run; each test gets its own app DB, task queue and server. A user is whoever the
browser context says it is: today the SSO proxy's ``X-Forwarded-Email`` header, set on every request.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from temporalio.testing import WorkflowEnvironment

from harness.ports import free_port
from starter.api.app import create_app
from store.settings import Settings
from tests.conftest import clear_sync_schedules

CHROMIUM = os.environ.get("LAPSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("LAPSE_SCREENSHOTS", Path(__file__).parents[2] / "build" / "screenshots"))
"""Where each page's screenshot goes, for CI to collect (``build/`` is not committed)."""


CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
"""The policy the pages must work under: no inline script, style or handler, no eval (Pico's icons are data:)."""


class StrictContentSecurityPolicy(BaseHTTPMiddleware):
    """Serve every page under ``CSP`` (the sign-in work adds the product's own headers; these tests hold the UI to
    them already): a violation is a console error, which the tests fail on."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make system-deps` installs Debian's", pytrace=False)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest_asyncio.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture
async def web(env: WorkflowEnvironment, settings: Settings, worker: None) -> AsyncIterator[str]:
    """The app (API and web UI) served over HTTP on a free loopback port; its base URL."""
    port = free_port()
    app = create_app(settings, client=env.client)
    app.add_middleware(StrictContentSecurityPolicy)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving
    await clear_sync_schedules(env.client)


Visit = Callable[[str], Awaitable[Page]]


@pytest_asyncio.fixture
async def as_user(browser: Browser, web: str) -> AsyncIterator[Callable[..., Awaitable[Visit]]]:
    """``visit = await as_user("alan@example.com")``, then ``page = await visit("/access")``: a browser context
    of its own per user (cookies and all), signed in as them."""
    contexts: list[BrowserContext] = []

    async def sign_in(email: str, *, width: int = 1280) -> Visit:
        context = await browser.new_context(
            base_url=web,
            extra_http_headers={"X-Forwarded-Email": email},
            viewport={"width": width, "height": 900},
        )
        context.set_default_timeout(15_000)
        contexts.append(context)

        async def visit(path: str) -> Page:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # A page answered with an error status (a 403 page, say) is logged too: that one is expected.
            page.on(
                "console",
                lambda m: errors.append(m.text) if m.type == "error" and m.location.get("url") != page.url else None,
            )
            page.errors = errors  # type: ignore[attr-defined]
            response = await page.goto(path)
            assert response is not None and response.headers.get("content-security-policy") == CSP
            return page

        return visit

    yield sign_in
    for context in contexts:
        await context.close()


async def check_accessibility(page: Page, name: str) -> None:
    """No serious or critical axe-core violation on the page as it is now; and its screenshot, for CI."""
    await page.screenshot(path=SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png", full_page=True)
    assert not page.errors, f"{name}: {page.errors}"  # type: ignore[attr-defined]
    results = await Axe().run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"{name}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in bad
    )

"""The README's pictures of Lapse's messages: the admin page's previews, photographed in Chromium.

Serves the API and web UI on a free port over a throwaway app DB (the demo organisation, signed in behind the
SSO proxy's header as its admin; no Temporal is needed for these pages), opens each preview in Debian's
Chromium through Playwright and saves the message alone as a PNG under ``docs/screenshots/``: the email is its
real HTML body, the Slack and Teams ones are Lapse's drawing of the blocks and card it sends (the README says
which is which). The previews use a fixed sample request and time, so a run changes a picture only when a
message changed. ``make screenshots`` runs it::

    .venv/bin/python -m bench.screenshots [--out docs/screenshots] [--width 800]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from playwright.async_api import Page, async_playwright

from harness.ports import free_port
from starter.api.app import create_app
from starter.services.org import checked_connector
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings

SHOTS = [
    ("decision_needed", "email"),
    ("decision_needed", "slack"),
    ("decision_needed", "teams"),
    ("expiring_soon", "slack"),
    ("expiring_soon", "email"),
]
"""(kind, channel) of each picture: ``<kind>-<channel>.png``."""
ADMIN = "ada@example.com"
CHROMIUM = os.environ.get("LAPSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
BUDGET = 600_000
"""Bytes all pictures together may weigh: a README is read over slow links too."""


async def photograph(page: Page, kind: str, channel: str, path: Path) -> None:
    """Open the preview of ``kind`` on ``channel`` and save the message alone as ``path``."""
    response = await page.goto(f"/admin/notifications/preview?kind={kind}&channel={channel}")
    if response is None or response.status != 200:
        raise SystemExit(f"the preview of {kind} on {channel} answered {response.status if response else 'nothing'}")
    message = page.locator("#message")
    if channel == "email":
        frame = page.frame_locator("iframe.email-body")
        await frame.locator("h1").wait_for()
        # The frame is as tall as the page's style makes it: fit it to the message, for the picture only.
        body = page.frame(url=lambda url: "/preview/email" in url)
        assert body is not None
        height = await body.evaluate(
            "Math.ceil(document.body.getBoundingClientRect().bottom"
            " + parseFloat(getComputedStyle(document.body).marginBottom))"
        )
        await page.locator("iframe.email-body").evaluate(
            "(frame, height) => frame.style.setProperty('height', height + 'px')", height + 8
        )
    await message.screenshot(path=path, type="png", animations="disabled")


async def take(data: Path, out: Path, width: int) -> list[Path]:
    """Serve Lapse over a new app DB in ``data`` and save each of ``SHOTS`` in ``out``; the files made."""
    port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        database_url=f"sqlite:///{data / 'lapse.db'}",
        auth="proxy",
        trusted_proxies=["127.0.0.1"],
        public_url="https://lapse.example.com",
    )
    migrate(settings.db_url)
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    made: list[Path] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(
                base_url=f"http://127.0.0.1:{port}",
                extra_http_headers={"X-Forwarded-Email": ADMIN},
                viewport={"width": width, "height": 900},
                device_scale_factor=1,
                color_scheme="light",
            )
            page = await context.new_page()
            for kind, channel in SHOTS:
                path = out / f"{kind.replace('_', '-')}-{channel}.png"
                await photograph(page, kind, channel, path)
                made.append(path)
            await browser.close()
    finally:
        server.should_exit = True
        await serving
    return made


def main(out: Path, width: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="lapse-screenshots-"))
    try:
        made = asyncio.run(take(data, out, width))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    total = 0
    for path in made:
        size = path.stat().st_size
        total += size
        print(f"{path}: {size / 1000:.0f} KB")
    print(f"{len(made)} pictures, {total / 1000:.0f} KB in all")
    if total > BUDGET:
        print(f"more than {BUDGET / 1000:.0f} KB: make them smaller", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--width", type=int, default=800, help="the browser window's width in CSS pixels")
    arguments = parser.parse_args()
    sys.exit(main(arguments.out, arguments.width))

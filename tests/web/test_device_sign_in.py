"""End to end: the installed ``lapse login`` signs in through a browser. The real command, run as a user runs it
(its own config directory), against the app served by uvicorn; its code approved in Chromium by a person signed
in through the SSO proxy, then other ``lapse`` commands work with the token it kept; and by a browser that was
not signed in, sent through the identity provider (the demo's, over OIDC) and back to the code. And axe-core on
each state of the ``/device`` page at desktop and phone width."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits
from tests.web.test_sign_in import no_cdn, provider, served, settings_for  # noqa: F401  (the OIDC app and provider)

LAPSE = str(Path(sys.executable).parent / "lapse")
SHOWN = re.compile(r"open (http://\S+/device) in a browser .*\n\n    ([A-Z]{4}-[A-Z]{4})\n")


def _environment(home: Path, api: str) -> dict[str, str]:
    """A user's environment: nothing of the server's, a home and config directory of its own, the API's URL."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
    return kept | {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "LAPSE_API_URL": api}


async def _lapse(environment: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the installed ``lapse`` to the end, without blocking the loop the app is served on."""
    process = await asyncio.create_subprocess_exec(
        LAPSE, *args, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def _start_login(environment: dict[str, str]) -> tuple[asyncio.subprocess.Process, str, str, str]:
    """``lapse login`` started, up to where it shows its code: the process, what it said, the page and the code."""
    login = await asyncio.create_subprocess_exec(
        LAPSE, "login", env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert login.stdout is not None
    said = ""
    while (found := SHOWN.search(said)) is None:
        line = await asyncio.wait_for(login.stdout.readline(), timeout=30)
        assert line, f"lapse login ended without a code: {said}"
        said += line.decode()
    return login, said, found[1], found[2]


async def test_lapse_login_is_approved_in_a_browser_and_every_command_then_uses_it(
    as_user, web: str, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, web)
    login, said, where, code = await _start_login(environment)
    assert where == f"{web}/device" and "?user_code=" not in said

    # What is asked, seen at phone width too (before it is decided).
    narrow = await _typed(await (await as_user("alan@example.com", width=360))(where), code)
    await expect(narrow.get_by_role("heading", level=1)).to_contain_text("Sign in the Lapse CLI on")
    await check_accessibility(narrow, "device-sign-in-360px")
    await fits(narrow, 360)

    alan = await as_user("alan@example.com")
    page = await _typed(await alan(where), code)
    await expect(page.locator(".device-code")).to_have_text(code)
    await expect(page.locator("dl.facts")).to_contain_text("127.0.0.1")
    await check_accessibility(page, "device-sign-in")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_contain_text("Approved.")
    await check_accessibility(page, "device-sign-in-approved")

    out, err = await asyncio.wait_for(login.communicate(), timeout=60)
    said += out.decode()
    assert login.returncode == 0, said + err.decode()
    assert f"signed in to {web} as alan@example.com (token scopes: read, request, approve)" in said
    kept = tmp_path / ".config" / "lapse" / "credentials.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    token = json.loads(kept.read_text())[web]["token"]
    assert token.startswith("lapse_") and token not in said  # kept, never shown

    for command in (["requests"], ["grants"], ["--json", "catalog"]):
        status, out_, err_ = await _lapse(environment, *command)
        assert status == 0, f"lapse {' '.join(command)}: {out_}{err_}"
    # The token is the person's, named after this machine: listed on their tokens page.
    tokens_page = await alan("/tokens")
    await expect(tokens_page.locator("table")).to_contain_text("lapse CLI on")


async def _typed(page: Page, code: str) -> Page:
    """``page`` (the code form) after typing ``code`` into it, as the person does."""
    await page.get_by_label(re.compile("The code")).fill(code)
    await page.get_by_role("button", name="Continue").click()
    return page


async def test_an_admin_ticks_admin_rights_and_a_link_asks_for_the_code_all_the_same(
    as_user, web: str, tmp_path: Path
) -> None:
    login, said, where, code = await _start_login(_environment(tmp_path, web))
    for width in (1280, 360):
        suffix = "" if width > 400 else "-360px"
        ada = await as_user("ada@example.com", width=width)
        page = await ada(f"{where}?user_code={code}")  # verification_uri_complete: a hint, nothing more
        await expect(page.locator("#link-hint")).to_contain_text("type the code")
        await expect(page.get_by_label(re.compile("The code"))).to_have_value("")
        await expect(page.get_by_role("button", name="Approve")).to_have_count(0)
        await check_accessibility(page, f"device-sign-in-link{suffix}")
        await fits(page, width)
        await _typed(page, code)
        admin = page.get_by_label(re.compile("Also admin rights"))
        await expect(admin).not_to_be_checked()
        await check_accessibility(page, f"device-sign-in-admin{suffix}")
        await fits(page, width)
    await admin.check()  # by keyboard-usable label, as a person ticks it
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_contain_text("with admin rights")
    out, err = await asyncio.wait_for(login.communicate(), timeout=60)
    assert login.returncode == 0, said + out.decode() + err.decode()
    assert "as ada@example.com (token scopes: read, request, approve, admin)" in out.decode()


async def test_the_device_page_typing_a_code_and_a_wrong_one_pass_axe(as_user, web: str) -> None:
    for width in (1280, 360):
        visit = await as_user("linus@example.com", width=width)
        suffix = "" if width > 400 else "-360px"
        page = await visit("/device")
        await expect(page.get_by_label(re.compile("The code"))).to_be_visible()
        await check_accessibility(page, f"device-sign-in-enter{suffix}")
        await fits(page, width)
        await page.get_by_label(re.compile("The code")).fill("hello")
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("alert")).to_contain_text("is not a sign-in code")
        page.errors.clear()  # type: ignore[attr-defined]  # the 422 the browser logs is the point here
        await check_accessibility(page, f"device-sign-in-wrong-code{suffix}")
        await fits(page, width)


async def test_a_browser_not_signed_in_goes_through_the_identity_provider_and_back_to_the_code(
    browser: Browser,
    served: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    login, said, where, code = await _start_login(_environment(tmp_path, served))
    assert where == f"{served}/device"  # LAPSE_PUBLIC_URL's
    link = f"{where}?user_code={code}"  # as a person may have been sent it: a hint kept through the sign-in
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    await context.route(re.compile(r"^https://"), no_cdn)
    try:
        page = await context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        await page.goto(link)
        await page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/oauth2/authorize"))  # the provider's page
        await page.get_by_role("button", name="alan@example.com").click()
        await page.wait_for_url(link)
        await expect(page.locator("#link-hint")).to_be_visible()
        await _typed(page, code)
        await expect(page.locator(".device-code")).to_have_text(code)
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status")).to_contain_text("Approved.")
    finally:
        await context.close()
    out, err = await asyncio.wait_for(login.communicate(), timeout=60)
    assert login.returncode == 0, said + out.decode() + err.decode()
    assert f"signed in to {served} as alan@example.com" in out.decode()

"""The approvals page: a card per request the approver can decide, with what they weigh (the requester's manager,
the role's sensitivity, the requester's current access and recent requests on the resource), paged oldest first,
following decisions others make; user text shown as text; axe-core at desktop and phone width."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect

from starter.services import approvals
from tests.conftest import Api
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits

DEPLOY = "ledger/payments-api/deploy"
XSS = "<script>window.pwned = 1</script> INC-9 & <b>now</b>"


def _as(email: str) -> dict[str, str]:
    return {"X-Forwarded-Email": email}


async def _history(api: Api) -> dict[str, Any]:
    """Alan holds payments-api/read, was denied a deploy before, and asks for one again (linus decides)."""
    held = await api.request("alan@example.com", "ledger/payments-api/read", "PT30M", "")
    await api.wait_for(held["id"], "active")
    earlier = await api.request("alan@example.com", DEPLOY, "PT1H", "first try")
    await api.ok("linus@example.com", "POST", f"/api/requests/{earlier['id']}/deny", {"comment": "not yet"})
    await api.wait_for(earlier["id"], "denied")
    pending = await api.request("alan@example.com", DEPLOY, "PT2H", XSS)
    return {"held": held, "earlier": earlier, "pending": pending}


async def test_a_card_shows_what_the_approver_weighs(api: Api) -> None:
    made = await _history(api)
    response = await api.http.get("/approvals", headers=_as("linus@example.com"))
    assert response.status_code == 200
    card = response.text.split(f'id="card-{made["pending"]["id"]}"')[1].split("</article>")[0]
    assert "Alan Turing" in card and "Linus Torvalds" in card  # the requester, and their manager
    assert 'sensitivity-high">high</mark>' in card and "Deploy to production" in card
    assert "<code>ledger/payments-api/read</code> (jit)" in card  # what alan holds on payments-api now
    assert f'href="/requests/{made["earlier"]["id"]}"' in card and "state-denied" in card  # his last try
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; INC-9 &amp; &lt;b&gt;now&lt;/b&gt;" in card
    assert "<script>window" not in response.text


async def test_the_page_is_paged_oldest_first(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approvals, "CARDS_PAGE", 1)
    first = await api.request("alan@example.com", DEPLOY, "PT1H", "first")
    second = await api.request("barbara@example.com", DEPLOY, "PT1H", "second")
    linus = _as("linus@example.com")

    page = (await api.http.get("/approvals", headers=linus)).text
    assert f'id="card-{first["id"]}"' in page and f'id="card-{second["id"]}"' not in page
    assert f'href="/approvals?after={first["id"]}">Next page' in page and "First page" not in page

    page = (await api.http.get(f"/approvals?after={first['id']}", headers=linus)).text
    assert f'id="card-{second["id"]}"' in page and f'id="card-{first["id"]}"' not in page
    assert "Next page" not in page and 'href="/approvals">First page' in page
    live = re.search(r'hx-get="(/approvals/live\?[^"]+)"', page)
    assert live is not None and f"after={second['id']}" not in live[1] and f"after={first['id']}" in live[1]
    # The poll of a later page keeps to that page: 204 while it is unchanged.
    assert (await api.http.get(live[1].replace("&amp;", "&"), headers=linus)).status_code == 204

    refused = await api.http.get("/approvals?after=nosuchreq", headers=linus)
    assert refused.status_code == 422 and "nosuchreq" in refused.text


async def test_cards_pass_axe_and_show_a_script_as_text(api: Api, as_user) -> None:
    made = await _history(api)
    for width in (1280, 360):
        linus = await as_user("linus@example.com", width=width)
        page = await linus("/approvals")
        card = page.locator(f"#card-{made['pending']['id']}")
        await expect(card.locator(".manager")).to_contain_text("Linus Torvalds")
        await expect(card.locator(".held")).to_contain_text("ledger/payments-api/read")
        await expect(card.locator(".recent")).to_contain_text("denied")
        await expect(card.locator(".justification").first).to_have_text(XSS)
        assert await page.evaluate("window.pwned") is None
        await check_accessibility(page, "approvals-card" if width > 400 else "approvals-card-360px")
        await fits(page, width)


async def test_the_page_follows_decisions_others_make(api: Api, as_user) -> None:
    """The two-person rule's second step: frances, radia and ada may each decide; two approvals are needed."""
    created = await api.request("ken@example.com", "ledger/prod-db/admin", "PT1H", "schema fix")
    url = f"/api/requests/{created['id']}"
    await api.ok("margaret@example.com", "POST", f"{url}/approve", {})

    frances = await as_user("frances@example.com")
    page = await frances("/approvals")
    card = page.locator(f"#card-{created['id']}")
    others = re.compile(r"Who else can decide: (ada|radia)@example\.com, (ada|radia)@example\.com")
    await expect(card).to_contain_text(others)
    await page.evaluate("window.notReloaded = true")
    await card.get_by_label("Comment").fill("looking")

    await api.ok("radia@example.com", "POST", f"{url}/approve", {"comment": "one of two"})
    await expect(card).to_contain_text("radia@example.com approved", timeout=15_000)
    await expect(card.get_by_label("Comment")).to_have_value("looking")  # kept through the refresh

    await api.ok("ada@example.com", "POST", f"{url}/deny", {"comment": "not today"})
    await expect(card).to_have_count(0, timeout=15_000)
    await expect(page.locator("#approvals-live")).to_contain_text("Nothing is waiting for your decision.")
    assert await page.evaluate("window.notReloaded === true")

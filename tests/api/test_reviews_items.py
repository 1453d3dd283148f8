"""Reviewing through the API: a reviewer's items, drafts, submitting, changing a decision, reassigning; and that
nobody reviews their own access, whichever way they try. Campaigns are made in the app DB (no workflow: telling
one that decisions were submitted fails, and is said, without losing them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlmodel import col, select

from access.errors import Refusal
from access.reviews import CampaignState, ItemState
from starter.services import review_decisions, review_items
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, ReviewItem
from tests.api.identities import client, offline_app
from tests.api.review_fixtures import campaign, item, linus_campaign, set_state, user
from tests.conftest import make_settings

LINUS = {"X-Forwarded-Email": "linus@example.com"}


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(settings)) as http:
        yield http


def _events(settings: Settings, action: str) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))))


def _row(settings: Settings, item_id: int) -> ReviewItem:
    with session_scope(settings.db_url, write=False) as session:
        found = session.get(ReviewItem, item_id)
    assert found is not None
    return found


async def test_a_reviewer_sees_their_items_never_their_own_grouped_and_paged(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ids = linus_campaign(settings)
    page = (await http.get("/api/reviews/items", headers=LINUS)).json()
    shown = [i["id"] for i in page["items"]]
    # By holder, then item: alan's two, barbara's two; never his own (not even the one naming him its reviewer).
    assert shown == [ids["alan-read"], ids["alan-external"], ids["barbara-write"], ids["barbara-birthright"]]
    assert page["counts"] == {"open": 4, "drafted": 0, "decided": 0, "done": 0}
    first = page["items"][0]
    assert first["user_name"] == "Alan Turing" and first["manager"] == "linus@example.com" and first["active"] is True
    assert first["last_used"] is None and first["last_used_said"] == "unknown"
    assert first["granted_by"] == f"request req{1}: on call this quarter"
    birthright = next(i for i in page["items"] if i["id"] == ids["barbara-birthright"])
    assert "exception on policy engineering-read" in birthright["revoking_means"]
    by_role = (await http.get("/api/reviews/items", params={"group": "role"}, headers=LINUS)).json()
    assert [i["role"] for i in by_role["items"]] == sorted(i["role"] for i in page["items"])
    # One at a time, by the cursor, through all four.
    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"after": after} if after else {})
        one = (await http.get("/api/reviews/items", params=params, headers=LINUS)).json()
        seen += [i["id"] for i in one["items"]]
        if (after := one["next_after"]) is None:
            break
    assert seen == shown
    filtered = await http.get("/api/reviews/items", params={"role": "ledger/prod-db", "path": "jit"}, headers=LINUS)
    assert [i["id"] for i in filtered.json()["items"]] == [ids["alan-read"], ids["barbara-write"]]
    bad = await http.get("/api/reviews/items", params={"after": "not-a-cursor"}, headers=LINUS)
    assert bad.status_code == 422 and "after" in bad.text
    mine = (await http.get("/api/reviews/mine", headers=LINUS)).json()
    assert [(c["id"], c["open"]) for c in mine] == [("quarterly-20260301T090000", 4)]


async def test_drafts_are_submitted_audited_and_can_change_until_acted_on(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ids = linus_campaign(settings)
    two = [ids["alan-read"], ids["barbara-write"]]
    no_comment = await http.post("/api/reviews/items/draft", json={"items": two, "decision": "revoke"}, headers=LINUS)
    assert no_comment.status_code == 422 and "comment" in no_comment.json()["detail"]
    drafted = await http.post(
        "/api/reviews/items/draft",
        json={"items": two, "decision": "revoke", "comment": "left the on-call rota"},
        headers=LINUS,
    )
    assert drafted.json() == {"drafted": 2}
    assert _row(settings, ids["alan-read"]).state == "open"  # a draft decides nothing yet
    assert _events(settings, "review.item.decided") == []
    await http.post(
        "/api/reviews/items/draft", json={"items": [ids["alan-external"]], "decision": "keep"}, headers=LINUS
    )
    counts = (await http.get("/api/reviews/items", headers=LINUS)).json()["counts"]
    assert counts["drafted"] == 3
    submitted = (await http.post("/api/reviews/items/submit", json={}, headers=LINUS)).json()
    assert submitted["decided"] == 3 and submitted["campaigns"] == ["quarterly-20260301T090000"]
    assert "not told at once" in submitted["notes"][0]  # no workflow here: the decisions stand all the same
    alan = _row(settings, ids["alan-read"])
    assert (alan.state, alan.decision, alan.comment, alan.decided_by) == (
        "decided",
        "revoke",
        "left the on-call rota",
        "linus@example.com",
    )
    events = _events(settings, "review.item.decided")
    assert sorted(e.details["item"] for e in events) == sorted([*two, ids["alan-external"]])
    assert all(e.actor == "linus@example.com" and e.target == "quarterly-20260301T090000" for e in events)
    # Changed after submitting: a new draft, submitted again; the event says what it was.
    await http.post("/api/reviews/items/draft", json={"items": [ids["alan-read"]], "decision": "keep"}, headers=LINUS)
    again = await http.post("/api/reviews/items/submit", json={"items": [ids["alan-read"]]}, headers=LINUS)
    assert again.json()["decided"] == 1
    assert _row(settings, ids["alan-read"]).decision == "keep"
    assert _events(settings, "review.item.decided")[-1].details["changed_from"] == "revoke"
    # Once acted on, it stays as it was.
    set_state(settings, ids["barbara-write"], ItemState.DONE, outcome="revoked")
    late = await http.post(
        "/api/reviews/items/draft", json={"items": [ids["barbara-write"]], "decision": "keep"}, headers=LINUS
    )
    assert late.status_code == 409 and "acted on" in late.json()["detail"]


async def test_nobody_reviews_their_own_access_by_any_path(settings: Settings, http: httpx.AsyncClient) -> None:
    ids = linus_campaign(settings)
    for own in (ids["linus-own"], ids["linus-admin"]):
        for call in (
            http.post("/api/reviews/items/draft", json={"items": [own], "decision": "keep"}, headers=LINUS),
            http.post("/api/reviews/items/submit", json={"items": [own]}, headers=LINUS),
            http.post(f"/api/reviews/items/{own}/reassign", json={"to": "ada@example.com"}, headers=LINUS),
            http.get(f"/api/reviews/items/{own}/reviewers", headers=LINUS),
        ):
            response = await call
            assert response.status_code in (403, 404), response.text
    assert _row(settings, ids["linus-own"]).state == "open"
    # Nor is an item handed to its holder, nor to anyone its definition does not name.
    to_alan = await http.post(
        f"/api/reviews/items/{ids['alan-read']}/reassign", json={"to": "alan@example.com"}, headers=LINUS
    )
    assert to_alan.status_code == 403 and "nobody reviews their own" in to_alan.json()["detail"]
    to_ken = await http.post(
        f"/api/reviews/items/{ids['alan-read']}/reassign", json={"to": "ken@example.com"}, headers=LINUS
    )
    assert to_ken.status_code == 422 and to_ken.json()["detail"].startswith("ken@example.com is not an eligible")
    # Someone else's items are not found, whoever asks (an admin included).
    ada = {"X-Forwarded-Email": "ada@example.com"}
    theirs = await http.post(
        "/api/reviews/items/draft", json={"items": [ids["alan-read"]], "decision": "keep"}, headers=ada
    )
    assert theirs.status_code == 404


async def test_reassigning_hands_the_item_over_with_an_audit_event(settings: Settings, http: httpx.AsyncClient) -> None:
    ids = linus_campaign(settings)
    eligible = (await http.get(f"/api/reviews/items/{ids['alan-read']}/reviewers", headers=LINUS)).json()
    assert eligible == ["ada@example.com"]  # the fallback; linus is the reviewer already, alan the holder
    await http.post(
        "/api/reviews/items/draft",
        json={"items": [ids["alan-read"]], "decision": "revoke", "comment": "x"},
        headers=LINUS,
    )
    moved = await http.post(
        f"/api/reviews/items/{ids['alan-read']}/reassign",
        json={"to": "ada@example.com", "comment": "I am on leave"},
        headers=LINUS,
    )
    assert moved.status_code == 200 and moved.json()["draft"] is None
    assert _row(settings, ids["alan-read"]).reviewer == "ada@example.com"
    (event,) = _events(settings, "review.item.reassigned")
    assert event.details | {"item": 0} == {
        "item": 0,
        "role": "ledger/prod-db/read",
        "user": "alan@example.com",
        "from": "linus@example.com",
        "to": "ada@example.com",
        "comment": "I am on leave",
    }
    ada_items = (await http.get("/api/reviews/items", headers={"X-Forwarded-Email": "ada@example.com"})).json()
    assert [i["id"] for i in ada_items["items"]] == [ids["alan-read"]]


async def test_closed_campaigns_and_past_deadlines_take_no_decision(settings: Settings) -> None:
    ids = campaign(
        settings,
        [item("alan@example.com", "ledger/prod-db/read", "linus@example.com", grant=1)],
        campaign_id="quarterly-20250101T000000",
        state=CampaignState.CLOSED,
    )
    linus = user(settings, "linus@example.com")
    with pytest.raises(Refusal) as refused:
        review_decisions.draft(settings, linus, review_decisions.DraftIn(items=ids, decision="keep"))  # type: ignore[arg-type]
    assert refused.value.kind.value == "Conflict"
    assert review_items.my_items(settings, linus).items == []  # a closed campaign's items are not to do
    escalated = campaign(
        settings,
        [item("alan@example.com", "ledger/prod-db/write", "linus@example.com", grant=2)],
        campaign_id="quarterly-20250401T000000",
        state=CampaignState.ESCALATED,
    )
    with pytest.raises(Refusal, match="past its deadline"):
        review_decisions.draft(settings, linus, review_decisions.DraftIn(items=escalated, decision="keep"))  # type: ignore[arg-type]


async def test_bulk_bounds_are_enforced(settings: Settings, http: httpx.AsyncClient) -> None:
    linus_campaign(settings)
    too_many = await http.post(
        "/api/reviews/items/draft", json={"items": list(range(1, 1002)), "decision": "keep"}, headers=LINUS
    )
    assert too_many.status_code == 422 and "items" in too_many.text
    unknown = await http.post("/api/reviews/items/draft", json={"items": [999999], "decision": "keep"}, headers=LINUS)
    assert unknown.status_code == 404 and "999999" in unknown.json()["detail"]


async def test_pages_walk_every_item_once_holders_first_then_accounts_with_no_user(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    """The databases sort NULLs apart: accounts no user is linked to come after everyone's, on both, by any page."""
    reviewer = "linus@example.com"
    made = campaign(
        settings,
        [
            item(None, "ledger/prod-db/read", reviewer, grant=1),
            item("barbara@example.com", "ledger/prod-db/read", reviewer, grant=2),
            item("alan@example.com", "ledger/prod-db/write", reviewer, grant=3),
            item(None, "ledger/payments-api/read", reviewer, grant=4),
            item("alan@example.com", "ledger/payments-api/read", reviewer, grant=5),
        ],
    )
    by_user = [made[2], made[4], made[1], made[0], made[3]]
    by_role = [made[3], made[4], made[0], made[1], made[2]]  # payments-api/read, prod-db/read, prod-db/write
    for group, expected in (("user", by_user), ("role", by_role)):
        for limit in (1, 2, 3, 5):
            seen, after = [], None
            while True:
                params: dict[str, Any] = {"group": group, "limit": limit} | ({"after": after} if after else {})
                page = (await http.get("/api/reviews/items", params=params, headers=LINUS)).json()
                seen += [i["id"] for i in page["items"]]
                if (after := page["next_after"]) is None:
                    break
            assert seen == expected, (group, limit)

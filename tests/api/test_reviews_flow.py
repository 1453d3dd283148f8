"""A campaign through the API and the real workflow: an admin defines and starts it, a manager revokes one item
and keeps another, the admin closes it early, the revoke happens in the target, and the report proves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import select

from starter.services.review_report import check_report
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, ReviewCampaign
from tests.conftest import Api, FakeTarget
from tests.support import eventually

ADA = "ada@example.com"
LINUS = "linus@example.com"


def _external(settings: Settings, target: FakeTarget, email: str, role: str) -> None:
    target.held.add((email, role))
    with session_scope(settings.db_url) as session:
        session.add(
            Grant(
                account=email,
                role=role,
                user_email=email,
                path="external",
                granted_at=datetime.now(UTC) - timedelta(days=90),
            )
        )


async def test_a_manager_revokes_through_the_api_and_the_report_proves_it(
    api: Api, settings: Settings, target: FakeTarget
) -> None:
    _external(settings, target, "alan@example.com", "ledger/prod-db/read")
    _external(settings, target, "barbara@example.com", "ledger/prod-db/write")
    definition = {
        "name": "ledger-external",
        "scope": {"integrations": ["ledger"], "paths": ["external"]},
        "reviewers": [{"kind": "manager"}],
        "fallback": [{"kind": "user", "name": ADA}],
        "deadline": "P14D",
        "reminders": [],
    }
    preview = await api.ok(ADA, "POST", "/api/reviews/preview", definition)
    assert (preview["items"], preview["reviewers"]) == (2, 1)
    await api.ok(ADA, "POST", "/api/reviews/definitions", definition)
    campaign = (await api.ok(ADA, "POST", "/api/reviews/definitions/ledger-external/start"))["campaign"]
    page = await api.ok(LINUS, "GET", "/api/reviews/items")
    by_holder = {item["user"]: item["id"] for item in page["items"]}
    assert set(by_holder) == {"alan@example.com", "barbara@example.com"}
    await api.ok(
        LINUS,
        "POST",
        "/api/reviews/items/draft",
        {"items": [by_holder["alan@example.com"]], "decision": "revoke", "comment": "moved team"},
    )
    await api.ok(
        LINUS, "POST", "/api/reviews/items/draft", {"items": [by_holder["barbara@example.com"]], "decision": "keep"}
    )
    submitted = await api.ok(LINUS, "POST", "/api/reviews/items/submit", {})
    assert submitted["decided"] == 2 and submitted["notes"] == []
    await api.ok(ADA, "POST", f"/api/reviews/campaigns/{campaign}/close")

    def closed() -> ReviewCampaign | None:
        with session_scope(settings.db_url, write=False) as session:
            return session.get(ReviewCampaign, campaign)

    await eventually(closed, until=lambda c: c is not None and c.state == "closed", what="the campaign closes")
    await eventually(
        lambda: ("alan@example.com", "ledger/prod-db/read") not in target.held, what="the revoke in the target"
    )
    assert ("barbara@example.com", "ledger/prod-db/write") in target.held

    def alan() -> Grant:
        with session_scope(settings.db_url, write=False) as session:
            return session.exec(select(Grant).where(Grant.user_email == "alan@example.com")).one()

    # The ledger records the end in its own transaction, just after the target's revoke returns.
    ended = await eventually(alan, until=lambda grant: not grant.active, what="alan's grant to end in the ledger")
    assert ended.ended_at is not None

    async def report() -> str:
        response = await api.call(ADA, "GET", f"/api/reviews/campaigns/{campaign}/report.csv")
        return response.text

    text = await eventually(report, until=lambda t: ',"revoked",' in t, what="the report shows the revoke")
    assert check_report(text)[0]
    row = next(line for line in text.splitlines() if '"alan@example.com"' in line and '"revoked"' in line)
    assert '"moved team"' in row and '"linus@example.com"' in row

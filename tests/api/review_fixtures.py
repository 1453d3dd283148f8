"""Campaigns made directly in the app DB, for the reviewing, report and page tests that need no workflow: the
items a campaign's snapshot would hold, with the reviewer the definition gives them (the demo organisation's
managers, ada as the fallback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from access.reviews import CampaignState, ItemState, ReviewDefinition
from access.types import Approver, ApproverKind
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewItem, User

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DEFINITION = ReviewDefinition(
    name="quarterly",
    description="Quarterly review of the ledger",
    scope={"integrations": ["ledger"]},  # type: ignore[arg-type]
    reviewers=[Approver(kind=ApproverKind.MANAGER)],
    fallback=[Approver(kind=ApproverKind.USER, name="ada@example.com")],
)
CAMPAIGN = "quarterly-20260301T090000"


def user(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        found = catalog.find_user(session, email)
    assert found is not None
    return found


def item(holder: str | None, role: str, reviewer: str, *, grant: int, **values: Any) -> ReviewItem:
    """An item as a snapshot holds it: ``path`` jit unless said, granted at ``T0``."""
    values.setdefault("path", "jit")
    if values["path"] == "jit":
        values.setdefault("request_id", f"req{grant}")
        values.setdefault("justification", "on call this quarter")
    if values["path"] == "birthright":
        values.setdefault("policy", "engineering-read")
    return ReviewItem(
        campaign_id=values.pop("campaign_id", CAMPAIGN),
        grant_id=grant,
        user_email=holder,
        account=holder or "svc_orphan",
        role=role,
        granted_at=T0 - timedelta(days=40),
        expires_at=T0 + timedelta(days=20) if values["path"] == "jit" else None,
        manager_email=values.pop("manager_email", None),
        reviewer=reviewer,
        fallback=["ada@example.com"],
        **values,
    )


def campaign(
    settings: Settings,
    items: list[ReviewItem],
    *,
    campaign_id: str = CAMPAIGN,
    state: CampaignState = CampaignState.OPEN,
    definition: ReviewDefinition = DEFINITION,
) -> list[int]:
    """A campaign holding ``items``; their ids."""
    with session_scope(settings.db_url) as session:
        session.add(
            ReviewCampaign(
                id=campaign_id,
                definition=definition.name,
                body=definition.model_dump(mode="json"),
                state=state.value,
                started_by="ada@example.com",
                started_at=T0,
                deadline=datetime.now(UTC) + timedelta(days=14),
                items=len(items),
                reviewers=len({i.reviewer for i in items}),
            )
        )
        session.flush()
        for one in items:
            one.campaign_id = campaign_id
            session.add(one)
        session.flush()
        return [one.id or 0 for one in items]


def linus_campaign(settings: Settings) -> dict[str, int]:
    """linus reviews his reports' access (alan, barbara), and an account no user is linked to; grace reviews
    linus's own; one item wrongly names its own holder as its reviewer (no path may let him decide it)."""
    ids = campaign(
        settings,
        [
            item(
                "alan@example.com",
                "ledger/prod-db/read",
                "linus@example.com",
                grant=1,
                manager_email="linus@example.com",
            ),
            item("barbara@example.com", "ledger/prod-db/write", "linus@example.com", grant=2),
            item(
                "barbara@example.com",
                "ledger/payments-api/read",
                "linus@example.com",
                grant=3,
                path="birthright",
            ),
            item("linus@example.com", "ledger/prod-db/admin", "grace@example.com", grant=4),
            item("linus@example.com", "ledger/billing-reports/viewer", "linus@example.com", grant=5),
            item("alan@example.com", "ledger/payments-api/deploy", "linus@example.com", grant=6, path="external"),
        ],
    )
    names = ["alan-read", "barbara-write", "barbara-birthright", "linus-admin", "linus-own", "alan-external"]
    return dict(zip(names, ids, strict=True))


def set_state(settings: Settings, item_id: int, state: ItemState, **values: Any) -> None:
    with session_scope(settings.db_url) as session:
        row = session.get(ReviewItem, item_id)
        assert row is not None
        row.state = state.value
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)

"""Access review campaigns on the time-skipping server with the real activities: a fortnight's deadline, its
reminders and its default are seconds of test time. Grants are put in the ledger directly (as discovery would
record grants made outside Lapse); the ledger integration is the test's target double."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlmodel import col, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from access import names
from access.review_runs import CampaignResult, ReviewCampaignInput
from access.reviews import CampaignState, ReviewDefinition
from starter.services import review_runs
from store import review_scope
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Grant, ReviewCampaign, ReviewDefinitionRow, ReviewItem, User
from tests.conftest import FakeTarget, make_settings
from tests.support import eventually
from worker import build_worker
from workflows.review import ReviewCampaignWorkflow

ADMIN = "ada@example.com"
READ = "ledger/prod-db/read"
HOLDERS = {
    "grace@example.com": ADMIN,
    "linus@example.com": "grace@example.com",
    "alan@example.com": "linus@example.com",
}
"""Holder → their manager (the demo organisation)."""


@dataclass
class Campaigns:
    env: WorkflowEnvironment
    settings: Settings
    target: FakeTarget
    handles: dict[str, WorkflowHandle[Any, CampaignResult]] = field(default_factory=dict)

    def define(self, **fields: Any) -> ReviewDefinition:
        body = {
            "name": "quarterly",
            "scope": {"roles": [READ]},
            "reviewers": [{"kind": "manager"}],
            "fallback": [{"kind": "user", "name": "radia@example.com"}],
            "deadline": "P14D",
            "reminders": ["P7D", "PT0S"],
            **fields,
        }
        definition = ReviewDefinition.model_validate(body)
        with session_scope(self.settings.db_url) as session:
            session.add(
                ReviewDefinitionRow(
                    name=definition.name,
                    body=definition.model_dump(mode="json"),
                    updated_by=ADMIN,
                    updated_at=datetime.now(UTC),
                )
            )
        return definition

    async def start(self, name: str = "quarterly") -> str:
        """As ``review_runs.start_campaign`` does, but with a plain start: the time-skipping server skips no time
        for a run started with an update (``start_campaign`` itself runs in tests/e2e)."""
        campaign_id = names.review_campaign_id(name, datetime.now(UTC))
        self.handles[campaign_id] = await self.env.client.start_workflow(
            ReviewCampaignWorkflow.run,
            ReviewCampaignInput(definition=name, started_by=ADMIN, campaign_id=campaign_id),
            id=names.review_workflow_id(campaign_id),
            task_queue=self.settings.task_queue,
        )
        await eventually(
            lambda: self.campaign(campaign_id).state if self.exists(campaign_id) else None,
            until=lambda state: state not in (None, "starting"),
            what=f"campaign {campaign_id} to open",
        )
        return campaign_id

    def exists(self, campaign_id: str) -> bool:
        with session_scope(self.settings.db_url, write=False) as session:
            return session.get(ReviewCampaign, campaign_id) is not None

    async def finish(self, campaign_id: str) -> CampaignResult:
        # The handle ``start_workflow`` gave: only its ``result()`` lets the time-skipping server skip time.
        result: CampaignResult = await self.handles[campaign_id].result()
        return result

    def items(self, campaign_id: str) -> dict[str, ReviewItem]:
        with session_scope(self.settings.db_url, write=False) as session:
            rows = session.exec(select(ReviewItem).where(ReviewItem.campaign_id == campaign_id))
            return {item.user_email or item.account: item for item in rows}

    def campaign(self, campaign_id: str) -> ReviewCampaign:
        with session_scope(self.settings.db_url, write=False) as session:
            campaign = session.get(ReviewCampaign, campaign_id)
            assert campaign is not None
            return campaign

    def audit(self, campaign_id: str) -> list[AuditEvent]:
        with session_scope(self.settings.db_url, write=False) as session:
            query = select(AuditEvent).where(AuditEvent.target == names.review_workflow_id(campaign_id))
            return list(session.exec(query.order_by(col(AuditEvent.id))))

    def active(self, email: str, active: bool) -> None:
        with session_scope(self.settings.db_url) as session:
            user = session.exec(select(User).where(User.email == email)).one()
            user.active = active
            session.add(user)


def held_externally(settings: Settings, target: FakeTarget, role: str, holders: list[str]) -> None:
    """Grants found in the target, made outside Lapse (what discovery records as ``external``)."""
    with session_scope(settings.db_url) as session:
        for email in holders:
            session.add(
                Grant(account=email, role=role, user_email=email, path="external", granted_at=datetime.now(UTC))
            )
            target.held.add((email, role))


@pytest_asyncio.fixture
async def campaigns(time_skipping: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Campaigns]:
    target = FakeTarget()
    settings = make_settings(tmp_path, "unused:0")
    held_externally(settings, target, READ, list(HOLDERS))
    async with build_worker(
        time_skipping.client, settings, task_queue=settings.task_queue, connectors={"ledger": target.connector}
    ):
        yield Campaigns(time_skipping, settings, target)


async def test_snapshot_assigns_each_item_to_the_holders_manager_and_the_default_keeps_what_nobody_decided(
    campaigns: Campaigns,
) -> None:
    campaigns.define()
    campaign_id = await campaigns.start()
    assert campaign_id.startswith("quarterly-")
    items = campaigns.items(campaign_id)
    assert {holder: item.reviewer for holder, item in items.items()} == HOLDERS
    assert all(item.state == "open" and item.path == "external" and item.holder_active for item in items.values())
    campaign = campaigns.campaign(campaign_id)
    assert (campaign.state, campaign.items, campaign.reviewers) == ("open", 3, 3)
    assert campaign.deadline - campaign.started_at == timedelta(days=14)

    result = await campaigns.finish(campaign_id)
    assert result.state is CampaignState.CLOSED
    items = campaigns.items(campaign_id)
    assert {(i.state, i.decision, i.outcome, i.by_default) for i in items.values()} == {("done", "keep", "kept", True)}
    assert campaigns.target.calls == []  # nothing was revoked
    actions = [e.action for e in campaigns.audit(campaign_id)]
    assert actions[0] == "review.started" and actions[-2:] == ["review.default", "review.closed"]
    reminders = [e for e in campaigns.audit(campaign_id) if e.action == "review.reminder"]
    assert sorted((e.reason, e.details["reviewer"], e.details["open"]) for e in reminders) == sorted(
        (label, reviewer, 1)
        for label in ("P7D before the deadline", "at the deadline")
        for reviewer in HOLDERS.values()
    )
    assert campaigns.campaign(campaign_id).state == "closed"


async def test_the_default_revokes_what_nobody_decided_in_the_target_with_proof(campaigns: Campaigns) -> None:
    campaigns.define(default="revoke", reminders=[])
    campaign_id = await campaigns.start()
    await campaigns.finish(campaign_id)

    assert sorted(a for kind, a, _ in campaigns.target.calls if kind == "revoke") == sorted(HOLDERS)
    assert campaigns.target.held == set()
    with session_scope(campaigns.settings.db_url, write=False) as session:
        events = {e.id: e for e in session.exec(select(AuditEvent).where(AuditEvent.action == "grant.revoked"))}
        grants = {g.id: g for g in session.exec(select(Grant).where(Grant.role == READ))}
    for item in campaigns.items(campaign_id).values():
        assert (item.decision, item.by_default, item.outcome, item.state) == ("revoke", True, "revoked", "done")
        event = events[item.proof["audit_event"]]
        assert event.details["grant_id"] == item.grant_id and f"access review {campaign_id}" in event.reason
        grant = grants[item.grant_id]
        assert not grant.active and grant.ended_at is not None
        assert item.proof["ended_at"] == grant.ended_at.isoformat()


async def test_the_default_escalates_to_the_fallback_then_keeps(campaigns: Campaigns) -> None:
    campaigns.define(default="escalate", escalation_deadline="P7D", reminders=[])
    campaign_id = await campaigns.start()
    await campaigns.finish(campaign_id)

    campaign = campaigns.campaign(campaign_id)
    assert campaign.escalation_deadline is not None and campaign.escalation_deadline > campaign.deadline
    items = campaigns.items(campaign_id)
    assert {(i.reviewer, i.escalated, i.outcome, i.by_default) for i in items.values()} == {
        ("radia@example.com", True, "kept", True)
    }
    escalated = [e for e in campaigns.audit(campaign_id) if e.action == "review.escalated"]
    assert [(e.details["reviewer"], e.details["items"]) for e in escalated] == [("radia@example.com", 3)]
    assert campaigns.target.calls == []


async def test_a_reviewer_who_leaves_mid_campaign_hands_their_items_to_the_fallback(campaigns: Campaigns) -> None:
    campaigns.define(reminders=[])
    campaign_id = await campaigns.start()
    campaigns.active("linus@example.com", False)  # alan's manager leaves
    await campaigns.finish(campaign_id)

    items = campaigns.items(campaign_id)
    print([(e.action, e.details) for e in campaigns.audit(campaign_id)])
    assert items["alan@example.com"].reviewer == "radia@example.com"
    assert items["linus@example.com"].reviewer == "grace@example.com"
    moved = [e for e in campaigns.audit(campaign_id) if e.action == "review.reassigned"]
    assert [(e.details["from"], e.details["to"]) for e in moved] == [("linus@example.com", {"radia@example.com": 1})]


async def test_nobody_reviews_their_own_access_and_an_empty_scope_runs_no_campaign(campaigns: Campaigns) -> None:
    # Grace is a named reviewer, and holds the role herself: her item goes to the fallback.
    campaigns.define(reviewers=[{"kind": "user", "name": "grace@example.com"}], reminders=[])
    campaign_id = await campaigns.start()
    items = campaigns.items(campaign_id)
    assert items["grace@example.com"].reviewer == "radia@example.com"
    assert items["alan@example.com"].reviewer == "grace@example.com"
    with session_scope(campaigns.settings.db_url, write=False) as session:
        campaign = session.get(ReviewCampaign, campaign_id)
        assert campaign is not None
        eligible = review_scope.eligible_reviewers(session, campaign, items["grace@example.com"])
        preview = review_scope.preview(session, review_scope.campaign_definition(campaign))
    assert eligible == ["radia@example.com"]
    assert (preview.items, preview.reviewers, preview.to_fallback, preview.by_path) == (3, 2, 1, {"external": 3})
    await review_runs.close_now(campaigns.env.client, campaigns.settings, campaign_id, by=ADMIN)
    await campaigns.finish(campaign_id)
    assert campaigns.campaign(campaign_id).closed_by == ADMIN

    campaigns.define(name="nothing", scope={"roles": ["ledger/payments-api/deploy"]})
    empty = await campaigns.start("nothing")
    assert (await campaigns.finish(empty)).state is CampaignState.EMPTY
    assert (campaigns.campaign(empty).state, campaigns.campaign(empty).items) == ("empty", 0)
    assert [e.action for e in campaigns.audit(empty)] == ["review.empty"]

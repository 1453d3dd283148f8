"""A review campaign's snapshot activity alone, on each app DB: every item holds its grant as it was and starts as
a new item would, whatever the batch size; the batch that reaches the scope's end says so (no empty batch after
it); and the garbage collector a batch pauses runs again after it, even after a failed one."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError

from access.review_runs import BeginCampaignInput, SnapshotInput, SnapshotResult
from access.reviews import ReviewDefinition
from activities.reviews import ReviewActivities
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, ReviewDefinitionRow, ReviewItem

pytestmark = pytest.mark.every_app_db  # the insert writes its constant columns as SQL literals, per dialect

T0 = datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
ADA = "ada@example.com"
DEFINITION = ReviewDefinition.model_validate(
    {
        "name": "snapshot",
        "scope": {"integrations": ["ledger"]},
        "reviewers": [{"kind": "manager"}],
        "fallback": [{"kind": "user", "name": ADA}],
    }
)
SET_BY_THE_SNAPSHOT = {
    "id", "campaign_id", "grant_id", "user_email", "account", "role", "path", "policy", "request_id",
    "justification", "granted_at", "expires_at", "manager_email", "holder_active", "last_used", "reviewer",
    "fallback",
}  # fmt: skip


def hold(settings: Settings) -> None:
    """Grants of each path, one of an account no user is linked to, one ended (not in scope)."""
    grants = [
        Grant(account="alan", role="ledger/prod-db/read", user_email="alan@example.com", path="jit",
              granted_at=T0, expires_at=T0 + timedelta(hours=8)),
        Grant(account="ken", role="ledger/payments-api/read", user_email="ken@example.com", path="birthright",
              policy="payments-read", granted_at=T0 - timedelta(days=90)),
        Grant(account="svc_orphan", role="ledger/prod-db/read", path="external", granted_at=T0 - timedelta(days=3)),
        Grant(account="barbara", role="ledger/prod-db/read", user_email="barbara@example.com", path="external",
              granted_at=T0 - timedelta(days=1), last_used_at=T0 - timedelta(minutes=5)),
        Grant(account="linus", role="ledger/payments-api/deploy", user_email="linus@example.com", path="jit",
              granted_at=T0, expires_at=T0 + timedelta(days=1)),
        Grant(account="dennis", role="ledger/payments-api/read", user_email="dennis@example.com", path="jit",
              active=False, granted_at=T0, expires_at=T0 + timedelta(hours=1), ended_at=T0 + timedelta(hours=1)),
    ]  # fmt: skip
    with session_scope(settings.db_url) as session:
        session.add_all(grants)
        session.add(ReviewDefinitionRow(name=DEFINITION.name, body=DEFINITION.model_dump(mode="json"), updated_at=T0))


def snapshot(activities: ReviewActivities, campaign_id: str, limit: int) -> list[SnapshotResult]:
    activities.begin_review_campaign(
        BeginCampaignInput(campaign_id=campaign_id, definition=DEFINITION.name, started_by=ADA, started_at=T0)
    )
    batches, after, more = [], 0, True
    while more:
        batch = activities.snapshot_review_batch(SnapshotInput(campaign_id=campaign_id, after_grant=after, limit=limit))
        batches.append(batch)
        after, more = batch.last_grant, batch.more
    return batches


def items_of(settings: Settings, campaign_id: str) -> dict[int, ReviewItem]:
    with session_scope(settings.db_url, write=False) as session:
        items = session.exec(select(ReviewItem).where(col(ReviewItem.campaign_id) == campaign_id)).all()
        return {item.grant_id: item for item in items}


def test_each_item_holds_its_grant_as_it_was_and_starts_open_whatever_the_batch_size(settings: Settings) -> None:
    hold(settings)
    with session_scope(settings.db_url, write=False) as session:
        active = session.exec(select(Grant).where(col(Grant.active).is_(True), col(Grant.role).startswith("ledger/")))
        in_scope = {grant.id or 0: grant for grant in active}
    activities = ReviewActivities(settings.db_url)
    fresh: dict[str, Any] = {
        name: field.get_default(call_default_factory=True)
        for name, field in ReviewItem.model_fields.items()
        if name not in SET_BY_THE_SNAPSHOT
    }
    assert fresh, "the columns every new item starts with"

    for limit in (len(in_scope), 2):
        campaign_id = f"snapshot-by-{limit}"
        batches = snapshot(activities, campaign_id, limit)
        # The batch that reaches the scope's end says so: no empty batch is asked for after it.
        assert len(batches) == -(-len(in_scope) // limit)
        assert all(batch.items > 0 for batch in batches)
        items = items_of(settings, campaign_id)
        assert set(items) == set(in_scope)
        for grant_id, item in items.items():
            grant = in_scope[grant_id]
            held = (grant.user_email, grant.account, grant.role, grant.path, grant.policy, grant.request_id,
                    grant.granted_at, grant.expires_at, grant.last_used_at)  # fmt: skip
            assert (item.user_email, item.account, item.role, item.path, item.policy, item.request_id,
                    item.granted_at, item.expires_at, item.last_used) == held  # fmt: skip
            assert {name: getattr(item, name) for name in fresh} == fresh
            assert item.reviewer != item.user_email
            assert item.fallback == ([ADA] if item.user_email != ADA else [])
        assert items[_id(in_scope, "alan")].reviewer == "linus@example.com"
        assert items[_id(in_scope, "alan")].manager_email == "linus@example.com"
        assert items[_id(in_scope, "svc_orphan")].reviewer == ADA  # nobody's account: the fallback
        assert items[_id(in_scope, "ken")].justification == "birthright policy 'payments-read'"
        assert items[_id(in_scope, "barbara")].last_used == T0 - timedelta(minutes=5)


def _id(grants: dict[int, Grant], account: str) -> int:
    return next(grant_id for grant_id, grant in grants.items() if grant.account == account)


def test_the_garbage_collector_runs_again_after_a_batch_even_a_failed_one(settings: Settings) -> None:
    hold(settings)
    activities = ReviewActivities(settings.db_url)
    assert gc.isenabled()
    snapshot(activities, "collected", 2)
    assert gc.isenabled()
    with pytest.raises(ApplicationError, match="no campaign"):
        activities.snapshot_review_batch(SnapshotInput(campaign_id="nobody-started-it", after_grant=0, limit=2))
    assert gc.isenabled()

"""Review campaigns (admins): the runs of the definitions, how far each is, and closing one early.

A campaign's items live in the app DB (``store.tables.ReviewItem``); its workflow reminds, escalates, applies the
defaults and carries out the revokes. Closing early asks the workflow to apply the defaults at once and close.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from access.errors import Refusal, RefusalKind
from access.reviews import CampaignState
from starter.services import review_runs
from starter.services.authorization import require_admin
from store.db import session_scope
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewItem, User

MAX_LISTED = 200


class ReviewerProgress(BaseModel):
    reviewer: str
    open: int
    decided: int
    done: int


class CampaignOut(BaseModel):
    id: str
    definition: str
    description: str
    state: CampaignState
    started_by: str
    """Who started it, or ``schedule``."""
    started_at: datetime
    deadline: datetime
    escalation_deadline: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    items: int
    reviewers: int
    by_state: dict[str, int]
    """Items by state: ``open``, ``decided``, ``done``."""
    by_outcome: dict[str, int]
    """Items acted on, by outcome: ``kept``, ``revoked``, ``exception``, ``already_gone``, ``revoke_failed``."""
    audit_head: str | None
    """The audit chain's head when its report was last made."""


class CampaignDetail(CampaignOut):
    progress: list[ReviewerProgress]
    """Per reviewer, the most undecided first."""


def _counts(session: Session, campaign_ids: list[str]) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    found: dict[str, tuple[dict[str, int], dict[str, int]]] = {c: ({}, {}) for c in campaign_ids}
    query = (
        select(ReviewItem.campaign_id, ReviewItem.state, ReviewItem.outcome, func.count())
        .where(col(ReviewItem.campaign_id).in_(campaign_ids))
        .group_by(col(ReviewItem.campaign_id), col(ReviewItem.state), col(ReviewItem.outcome))
    )
    for campaign_id, state, outcome, n in session.exec(query):  # type: ignore[call-overload]
        by_state, by_outcome = found[campaign_id]
        by_state[state] = by_state.get(state, 0) + n
        if outcome:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    return found


def _out(campaign: ReviewCampaign, counts: tuple[dict[str, int], dict[str, int]]) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        definition=campaign.definition,
        description=campaign.body.get("description", ""),
        state=CampaignState(campaign.state),
        started_by=campaign.started_by,
        started_at=campaign.started_at,
        deadline=campaign.deadline,
        escalation_deadline=campaign.escalation_deadline,
        closed_at=campaign.closed_at,
        closed_by=campaign.closed_by,
        items=campaign.items,
        reviewers=campaign.reviewers,
        by_state=counts[0],
        by_outcome=counts[1],
        audit_head=campaign.audit_head,
    )


def find_campaign(session: Session, campaign_id: str) -> ReviewCampaign:
    campaign = session.get(ReviewCampaign, campaign_id)
    if campaign is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no review campaign {campaign_id!r}", field="campaign_id")
    return campaign


def list_campaigns(
    settings: Settings,
    admin: User,
    *,
    definition: str | None = None,
    state: CampaignState | None = None,
    limit: int = 50,
) -> list[CampaignOut]:
    """The campaigns, newest first, of one definition or in one state when given."""
    require_admin(admin)
    query = select(ReviewCampaign).order_by(col(ReviewCampaign.started_at).desc(), col(ReviewCampaign.id).desc())
    if definition:
        query = query.where(ReviewCampaign.definition == definition)
    if state is not None:
        query = query.where(ReviewCampaign.state == state.value)
    with session_scope(settings.db_url, write=False) as session:
        campaigns = list(session.exec(query.limit(max(1, min(limit, MAX_LISTED)))))
        counts = _counts(session, [c.id for c in campaigns])
    return [_out(c, counts[c.id]) for c in campaigns]


def get_campaign(settings: Settings, admin: User, campaign_id: str) -> CampaignDetail:
    """A campaign, with each reviewer's progress."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        campaign = find_campaign(session, campaign_id)
        counts = _counts(session, [campaign.id])[campaign.id]
        per: dict[str, ReviewerProgress] = {}
        query = (
            select(ReviewItem.reviewer, ReviewItem.state, func.count())
            .where(ReviewItem.campaign_id == campaign.id)
            .group_by(ReviewItem.reviewer, ReviewItem.state)
        )
        for reviewer, state, n in session.exec(query):  # type: ignore[call-overload]
            progress = per.setdefault(reviewer, ReviewerProgress(reviewer=reviewer, open=0, decided=0, done=0))
            setattr(progress, state, getattr(progress, state, 0) + n)
    ordered = sorted(per.values(), key=lambda p: (-p.open, p.reviewer))
    return CampaignDetail(**_out(campaign, counts).model_dump(), progress=ordered)


async def close_campaign(client: Client, settings: Settings, admin: User, campaign_id: str) -> CampaignOut:
    """Close a campaign now: its workflow applies the defaults to what nobody decided, carries out the decisions
    and closes (``review.closed``); refused for a campaign already over."""
    require_admin(admin)
    await review_runs.close_now(client, settings, campaign_id, by=admin.email)
    with session_scope(settings.db_url, write=False) as session:
        campaign = find_campaign(session, campaign_id)
        return _out(campaign, _counts(session, [campaign.id])[campaign.id])

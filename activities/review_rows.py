"""A review campaign's rows as its activities read them: the campaign with its definition, who acts, what its
audit events are about, and how one of several eligible people is picked for an item."""

from __future__ import annotations

import zlib

from sqlmodel import Session
from temporalio.exceptions import ApplicationError

from access import names
from access.reviews import ReviewDefinition
from store.tables import ReviewCampaign

ACTOR = "lapse"


def audit_target(campaign_id: str) -> str:
    """What a campaign's audit events are about: its workflow's id, ``review-<campaign>``."""
    return names.review_workflow_id(campaign_id)


def campaign_of(session: Session, campaign_id: str) -> tuple[ReviewCampaign, ReviewDefinition]:
    """The campaign and its definition as it was when the campaign started."""
    campaign = session.get(ReviewCampaign, campaign_id)
    if campaign is None:
        raise ApplicationError(f"there is no campaign {campaign_id}", type="NoSuchCampaign", non_retryable=True)
    return campaign, ReviewDefinition.model_validate(campaign.body)


def pick(people: list[str], key: str) -> str:
    """One of ``people`` for an item, stably by ``key`` (its holder): one person's items go to the same one."""
    return people[zlib.crc32(key.encode()) % len(people)]

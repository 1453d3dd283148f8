"""A review campaign's rows as its activities read them and write them: the campaign with its definition, who
acts, what its audit events are about, how one of several eligible people is picked for an item, and the items a
snapshot writes."""

from __future__ import annotations

import gc
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table, false, literal_column, null
from sqlmodel import Session
from temporalio.exceptions import ApplicationError

from access import names
from access.grants import GrantPath
from access.reviews import ItemState, ReviewDefinition
from store.review_scope import ReviewerResolver, ScopedGrant
from store.tables import ReviewCampaign, ReviewItem

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


_ITEMS: Table = ReviewItem.__table__  # type: ignore[attr-defined]

INSERT_SNAPSHOT_ITEMS = _ITEMS.insert().values(
    escalated=false(),
    state=literal_column(f"'{ItemState.OPEN.value}'"),
    draft=null(),
    draft_comment=literal_column("''"),
    decision=null(),
    comment=literal_column("''"),
    decided_by=null(),
    decided_at=null(),
    by_default=false(),
    outcome=null(),
    acted_at=null(),
    proof=literal_column("'{}'"),
    error=null(),
)
"""Writes a snapshot's items (``snapshot_item`` rows) in one executemany: a Core insert, because the ORM's bulk
insert starts a new statement wherever the next row's NULL columns differ (some 63,000 statements for 100,000
items); and what every new item starts with is written into the statement, not bound and converted per row."""


def snapshot_item(
    campaign_id: str, grant: ScopedGrant, resolver: ReviewerResolver, reasons: Mapping[str, str]
) -> dict[str, Any]:
    """An open item for ``grant`` as it is now, with its reviewer (``reasons``: JIT requests' justifications)."""
    reviewer, _ = resolver.reviewer(grant.user_email, grant.role)
    if grant.path == GrantPath.BIRTHRIGHT:
        justification = f"birthright policy {grant.policy!r}"
    elif grant.path == GrantPath.JIT:
        justification = reasons.get(grant.request_id or "", "")
    else:
        justification = "found in the target: made outside Lapse"
    return {
        "campaign_id": campaign_id,
        "grant_id": grant.id,
        "user_email": grant.user_email,
        "account": grant.account,
        "role": grant.role,
        "path": grant.path,
        "policy": grant.policy,
        "request_id": grant.request_id,
        "justification": justification[:2000],
        "granted_at": grant.granted_at,
        "expires_at": grant.expires_at,
        "manager_email": resolver.manager_of(grant.user_email),
        "holder_active": resolver.active(grant.user_email),
        "last_used": grant.last_used_at,  # as discovery last saw it; None: "unknown"
        "reviewer": reviewer or "",  # nobody at all: the default decides it at the deadline
        "fallback": resolver.fallback(grant.user_email, grant.role),
    }


@contextmanager
def collection_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a snapshot's batch is read, resolved and written.

    Tens of thousands of rows, each a few new containers, set off thousands of collections (a few of them over
    the worker's whole heap): a fifth of a batch's time. The rows make no reference cycles, so reference counting
    frees them as before; only cycles made meanwhile, anywhere in the worker, wait the second or so until the
    collector runs again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:  # another batch's thread that paused it first turns it back on
            gc.enable()

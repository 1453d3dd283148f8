"""What a review campaign tells its reviewers: the items it gives each one, and its reminders.

Each is queued in the notification outbox (``store.notifications``) in the transaction that assigns the items or
records the reminder, so it is queued exactly when that is recorded, once: a retried activity finds its work done
and queues nothing, and each notice's key (campaign, reason, sequence, kind, recipient) is the same each time
anyway. One notice per reviewer and event however many items it moves (a campaign may hold 100,000 items and
thousands of reviewers): the counts come from one grouped query, and the outbox takes them in one insert per
500 rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from access.notifications import Notice, NoticeKind
from access.reviews import ReviewDefinition
from activities.notify.settings import stored_routes
from activities.review_rows import ACTOR
from store import notifications as outbox
from store.notifications import Routes
from store.tables import ReviewCampaign, ReviewItem

MAX_LISTED = 20
"""People named in one notice's details (a manager's reports, the reviewers who left): the page has the rest."""


class Reason(StrEnum):
    """Why items came to a reviewer (the second part of an assignment notice's key)."""

    STARTED = "started"
    """The campaign started: its snapshot gave them these items."""
    ESCALATED = "escalated"
    """Nobody decided by the deadline: the fallback reviewer has them now, with a new deadline."""
    REVIEWER_LEFT = "reviewer_left"
    """Their reviewer left the organisation: the fallback reviewer has them now."""
    REASSIGNED = "reassigned"
    """Another reviewer handed them over."""


_SAYS = {
    Reason.STARTED: "The access review {title} gives you {items} to review by {due}.",
    Reason.ESCALATED: "Nobody decided them by the deadline, so {items} of the access review {title} are escalated "
    "to you: review them by {due}.",
    Reason.REVIEWER_LEFT: "Their reviewer left the organisation, so {items} of the access review {title} come to "
    "you: review them by {due}.",
    Reason.REASSIGNED: "{actor} handed you {items} of the access review {title}: review by {due}.",
}
"""What a reviewer reads first, per reason (the message's fields say the rest)."""
_ACTIONS = {
    Reason.STARTED: "review.started",
    Reason.ESCALATED: "review.escalated",
    Reason.REVIEWER_LEFT: "review.reassigned",
    Reason.REASSIGNED: "review.item.reassigned",
}


def routes(session: Session) -> Routes:
    """Where notices go now (the stored ``notifications`` section): empty when nothing is configured, and then
    a campaign works out nothing to tell."""
    return stored_routes(session)


def items_per_reviewer(session: Session, campaign_id: str) -> dict[str, int]:
    """A campaign's items per reviewer, in one grouped query (``""``: items nobody reviews, which the default
    decides at the deadline)."""
    query = (
        sa_select(col(ReviewItem.reviewer), func.count())
        .where(col(ReviewItem.campaign_id) == campaign_id)
        .group_by(col(ReviewItem.reviewer))
    )
    return {reviewer: n for reviewer, n in session.execute(query)}


def title_of(definition: ReviewDefinition) -> str:
    """How a message names the campaign: the definition's description, else its name."""
    return definition.description.strip() or definition.name


@dataclass(frozen=True)
class _Event:
    """One campaign event that tells people: what each of its notices shares."""

    campaign: ReviewCampaign
    kind: NoticeKind
    action: str
    """The audit action it comes with (``review.started``, ``review.reminder``…)."""
    key: str
    """``<campaign>:<reason>:<sequence>``: the same each time the event is recorded."""
    actor: str
    now: datetime
    details: dict[str, Any]

    def notice(self, recipient: str | None, text: str, **details: Any) -> Notice:
        return Notice(
            key=f"{self.key}:{self.kind.value}:{recipient or '*'}",
            kind=self.kind,
            recipient=recipient,
            subject=self.campaign.id,
            actor=self.actor,
            action=self.action,
            text=text,
            at=self.now,
            details=self.details | details,
        )


def queue_assigned(
    session: Session,
    campaign: ReviewCampaign,
    definition: ReviewDefinition,
    counts: Mapping[str, int],
    *,
    reason: Reason,
    seq: str,
    deadline: datetime,
    now: datetime,
    routes: Routes,
    actor: str = "lapse",
    details: Mapping[str, Any] | None = None,
) -> int:
    """``REVIEW_ASSIGNED`` to each reviewer in ``counts`` (how many items came to them, by ``reason``), and one
    broadcast for shared destinations; ``seq`` tells this event from the campaign's others of the same reason.
    Returns the rows queued."""
    given = {reviewer: n for reviewer, n in sorted(counts.items()) if reviewer and n > 0}
    if routes.empty or not given:
        return 0
    title, due = _quoted(definition), _shown(deadline)
    event = _Event(
        campaign, NoticeKind.REVIEW_ASSIGNED, _ACTIONS[reason], f"{campaign.id}:{reason.value}:{seq}", actor, now,
        _details(campaign, definition, deadline, reason=reason.value, **(details or {})),
    )  # fmt: skip
    notices: list[Notice] = []
    for reviewer, n in given.items():
        text = _SAYS[reason].format(title=title, items=_items(n), due=due, actor=actor)
        notices.append(event.notice(reviewer, text, items=n))
    total, reviewers = sum(given.values()), len(given)
    said = {
        Reason.STARTED: f"started: {_items(total)} for {reviewers} reviewers, due {due}.",
        Reason.ESCALATED: f"{_items(total)} nobody decided escalated to {reviewers} fallback reviewers, due {due}.",
        Reason.REVIEWER_LEFT: f"{_items(total)} of reviewers who left handed to {reviewers} fallback reviewers.",
        Reason.REASSIGNED: f"{actor} handed {_items(total)} to another reviewer.",
    }[reason]
    notices.append(event.notice(None, f"The access review {title}: {said}", items=total, reviewers=reviewers))
    return outbox.queue(session, notices, routes, now=now)


def queue_reminders(
    session: Session,
    campaign: ReviewCampaign,
    definition: ReviewDefinition,
    counts: Mapping[str, int],
    managers: Mapping[str, str | None],
    *,
    label: str,
    now: datetime,
    routes: Routes,
) -> int:
    """``REVIEW_REMINDER`` to each reviewer with items open (``counts``), a copy to their manager where
    ``managers`` names one (one per manager, naming their reports), and one broadcast. ``label`` (which
    reminder: ``P3D before the deadline``) keys them. Returns the rows queued."""
    if routes.empty or not counts:
        return 0
    title, due = _quoted(definition), _shown(campaign.deadline)
    details = _details(campaign, definition, campaign.deadline, reminder=label)
    event = _Event(
        campaign, NoticeKind.REVIEW_REMINDER, "review.reminder", f"{campaign.id}:reminder:{label}", ACTOR, now, details
    )
    notices: list[Notice] = []
    reports: dict[str, dict[str, int]] = {}
    for reviewer, n in sorted(counts.items()):
        notices.append(event.notice(reviewer, f"You have {_items(n)} open in the access review {title}, due {due}.",
                                    open=n))  # fmt: skip
        manager = managers.get(reviewer)
        if manager and manager != reviewer:
            reports.setdefault(manager, {})[reviewer] = n
    copies = replace(event, key=f"{campaign.id}:reminder-copy:{label}")
    for manager, theirs in sorted(reports.items()):
        total, people = sum(theirs.values()), sorted(theirs)
        who = f"{people[0]} has" if len(people) == 1 else f"{len(people)} people you manage have"
        text = f"A copy for you as their manager: {who} {_items(total)} open in the access review {title}, due {due}."
        listed = {person: theirs[person] for person in people[:MAX_LISTED]}
        notices.append(
            copies.notice(manager, text, open=total, copy=True, reports=listed, more_reports=len(people) - len(listed))
        )
    total = sum(counts.values())
    said = f"The access review {title}: {_items(total)} still open with {len(counts)} reviewers, due {due}."
    notices.append(event.notice(None, said, open=total, reviewers=len(counts)))
    return outbox.queue(session, notices, routes, now=now)


def _details(campaign: ReviewCampaign, definition: ReviewDefinition, deadline: datetime, **more: Any) -> dict[str, Any]:
    return {
        "campaign": campaign.id,
        "definition": definition.name,
        "description": definition.description,
        "deadline": deadline.isoformat(),
        **more,
    }


def _quoted(definition: ReviewDefinition) -> str:
    return f'"{title_of(definition)}"'


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def _shown(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

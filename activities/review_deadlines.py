"""Activities of a review campaign over its open time: hand a leaver's items to the fallback, close the items whose
grant ended, and apply the default to what nobody decided by the deadline (keep, revoke, or escalate).

Each is one transaction over the campaign's rows; a retry finds its work done (no open item left to decide).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col, select
from temporalio import activity

from access import names
from access.review_runs import CampaignRef, DefaultInput, DefaultResult, SweepResult
from access.reviews import CampaignState, DefaultDecision, ItemDecision, ItemOutcome, ItemState, ReviewDefinition
from access.types import AuditEntry
from activities import review_notices
from activities.liveness import heartbeats
from activities.review_notices import MAX_LISTED
from activities.review_rows import ACTOR, audit_target, campaign_of, pick
from store import review_scope
from store.audit_log import append_audit
from store.db import session_scope
from store.tables import Grant, ReviewCampaign, ReviewItem, User


class ReviewDeadlineActivities:
    """Activities bound to one app DB."""

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url

    def all(self) -> list[Callable[..., Any]]:
        return [self.sweep_review_campaign, self.apply_review_default]

    @activity.defn(name=names.SWEEP_REVIEW_CAMPAIGN)
    @heartbeats
    def sweep_review_campaign(self, input: CampaignRef) -> SweepResult:
        """Hand the open items of reviewers who left to the fallback (``review.reassigned``), and close the
        items whose grant ended before anyone acted on them (``already_gone``)."""
        result = SweepResult()
        with session_scope(self._db_url) as session:
            campaign, definition = campaign_of(session, input.campaign_id)
            reviewers = set(
                session.execute(
                    sa_select(col(ReviewItem.reviewer))
                    .where(col(ReviewItem.campaign_id) == campaign.id, col(ReviewItem.state) == ItemState.OPEN)
                    .distinct()
                ).scalars()
            ) - {""}
            active = set(
                session.execute(
                    sa_select(col(User.email)).where(col(User.email).in_(sorted(reviewers)), col(User.active).is_(True))
                ).scalars()
            )
            left = sorted(reviewers - active)
            if left:
                result.to_fallback = self._to_fallback(session, campaign, definition, left)
            result.already_gone = already_gone(session, campaign.id)
        return result

    def _to_fallback(
        self, session: Session, campaign: ReviewCampaign, definition: ReviewDefinition, left: list[str]
    ) -> int:
        resolver = review_scope.ReviewerResolver(session, definition)
        moved: dict[str, Counter[str]] = {}
        items = session.exec(
            select(ReviewItem)
            .where(ReviewItem.campaign_id == campaign.id, ReviewItem.state == ItemState.OPEN)
            .where(col(ReviewItem.reviewer).in_(left))
            .with_for_update()
        ).all()
        for item in items:
            gone = {item.reviewer}
            people = [p for p in item.fallback if resolver.active(p) and p != item.user_email and p not in gone]
            if not people:
                people = resolver.fallback(item.user_email, item.role, excluding=gone)
            if not people:
                reviewer, _ = resolver.reviewer(item.user_email, item.role, excluding=gone)
                people = [reviewer] if reviewer else []
            new = pick(people, item.user_email or item.role) if people else ""
            moved.setdefault(item.reviewer, Counter())[new or "nobody"] += 1
            item.reviewer, item.draft, item.draft_comment = new, None, ""
            session.add(item)
        now = datetime.now(UTC)
        append_audit(
            session,
            [
                AuditEntry(
                    actor=ACTOR,
                    action="review.reassigned",
                    target=audit_target(campaign.id),
                    reason=f"{reviewer} left the organisation: their open items go to the fallback reviewers",
                    details={"from": reviewer, "to": dict(counts)},
                    at=now,
                )
                for reviewer, counts in sorted(moved.items())
            ],
        )
        # The fallback reviewers are told what came to them, in this transaction: a retry finds nothing left to
        # move. Another leaver's items, in a later sweep, are another event (keyed by the sweep's time).
        given: Counter[str] = Counter()
        for counts in moved.values():
            given.update({person: n for person, n in counts.items() if person != "nobody"})
        review_notices.queue_assigned(
            session, campaign, definition, given, reason=review_notices.Reason.REVIEWER_LEFT,
            seq=now.strftime("%Y%m%dT%H%M%S%f"), deadline=campaign.escalation_deadline or campaign.deadline,
            now=now, routes=review_notices.routes(session), details={"left": sorted(moved)[:MAX_LISTED]},
        )  # fmt: skip
        return len(items)

    @activity.defn(name=names.APPLY_REVIEW_DEFAULT)
    @heartbeats
    def apply_review_default(self, input: DefaultInput) -> DefaultResult:
        """What nobody decided (open items, drafts included) takes the default: kept, revoked (carried out with
        the rest), or escalated to the fallback reviewers with a new deadline. ``review.default`` /
        ``review.escalated``; a retry finds nothing open left to decide."""
        result = DefaultResult()
        target = audit_target(input.campaign_id)
        with session_scope(self._db_url) as session:
            campaign, _ = campaign_of(session, input.campaign_id)
            now = datetime.now(UTC)
            open_items = (col(ReviewItem.campaign_id) == campaign.id, col(ReviewItem.state) == ItemState.OPEN)
            if input.default is DefaultDecision.ESCALATE:
                result.escalated = self._escalate(session, campaign, input, now)
            else:
                decision = ItemDecision.KEEP if input.default is DefaultDecision.KEEP else ItemDecision.REVOKE
                why = f"nobody decided by the deadline: the default ({input.default.value}) applies"
                if input.closing_early:
                    why = f"closed early by {input.closing_early}: the default ({input.default.value}) applies"
                count = session.execute(
                    update(ReviewItem)
                    .where(*open_items)
                    .values(
                        state=ItemState.DECIDED.value,
                        decision=decision.value,
                        comment=why,
                        decided_by=ACTOR,
                        decided_at=now,
                        by_default=True,
                        draft=None,
                        draft_comment="",
                    )
                ).rowcount  # type: ignore[attr-defined]
                setattr(result, "kept" if decision is ItemDecision.KEEP else "revoked", count)
                if count:
                    append_audit(
                        session,
                        [
                            AuditEntry(
                                actor=ACTOR,
                                action="review.default",
                                target=target,
                                reason=why,
                                details={"decision": decision.value, "items": count},
                                at=now,
                            )
                        ],
                    )
        return result

    def _escalate(self, session: Session, campaign: ReviewCampaign, input: DefaultInput, now: datetime) -> int:
        assert input.escalation_deadline is not None
        resolver: review_scope.ReviewerResolver | None = None
        to: Counter[str] = Counter()
        items = session.exec(
            select(ReviewItem)
            .where(ReviewItem.campaign_id == campaign.id, ReviewItem.state == ItemState.OPEN)
            .where(col(ReviewItem.escalated).is_(False))
            .with_for_update()
        ).all()
        for item in items:
            people = [p for p in item.fallback if p != item.user_email]
            if resolver is None:
                resolver = review_scope.ReviewerResolver(session, ReviewDefinition.model_validate(campaign.body))
            people = [p for p in people if resolver.active(p)] or resolver.fallback(item.user_email, item.role)
            if people:
                item.reviewer = pick(people, item.user_email or item.role)
            item.escalated, item.draft, item.draft_comment = True, None, ""
            to[item.reviewer] += 1
            session.add(item)
        campaign.state = CampaignState.ESCALATED
        campaign.escalation_deadline = input.escalation_deadline
        session.add(campaign)
        append_audit(
            session,
            [
                AuditEntry(
                    actor=ACTOR,
                    action="review.escalated",
                    target=audit_target(campaign.id),
                    reason=f"nobody decided by the deadline: escalated to the fallback reviewers, due "
                    f"{input.escalation_deadline.isoformat()}",
                    details={"reviewer": reviewer, "items": count, "deadline": input.escalation_deadline.isoformat()},
                    at=now,
                )
                for reviewer, count in sorted(to.items())
            ],
        )
        # The fallback reviewers are told, once: the campaign escalates once, and a retry finds nothing left.
        review_notices.queue_assigned(
            session, campaign, ReviewDefinition.model_validate(campaign.body), to,
            reason=review_notices.Reason.ESCALATED, seq="0",
            deadline=input.escalation_deadline, now=now, routes=review_notices.routes(session),
        )  # fmt: skip
        return len(items)


def already_gone(session: Session, campaign_id: str) -> int:
    """Close the items whose grant ended before anyone acted on them, with the grant's end as proof."""
    rows = session.execute(
        sa_select(col(ReviewItem.id), col(Grant.ended_at))
        .join(Grant, col(Grant.id) == ReviewItem.grant_id)
        .where(col(ReviewItem.campaign_id) == campaign_id, col(ReviewItem.acted_at).is_(None))
        .where(col(ReviewItem.state).in_([ItemState.OPEN.value, ItemState.DECIDED.value]))
        .where(col(Grant.active).is_(False))
    ).all()
    now = datetime.now(UTC)
    for item_id, ended_at in rows:
        session.execute(
            update(ReviewItem)
            .where(col(ReviewItem.id) == item_id, col(ReviewItem.acted_at).is_(None))
            .values(
                state=ItemState.DONE.value,
                outcome=ItemOutcome.ALREADY_GONE.value,
                acted_at=now,
                draft=None,
                proof={"ended_at": ended_at.isoformat() if ended_at else None},
            )
        )
    return len(rows)

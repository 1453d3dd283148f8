"""Activities of a review campaign's bookkeeping: begin, snapshot, open, remind, close.

Each is one short transaction over the campaign's rows (or several, for a snapshot's batch), written so a retry
after a worker died finds its own work done and does nothing twice. Carrying decisions out, and recording the
proof that a revoke happened, are in ``activities.review_revokes``; the sweep and the default at the deadline in
``activities.review_deadlines``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names
from access.durations import format_duration
from access.grants import GrantPath
from access.review_runs import (
    BeginCampaignInput,
    CampaignPlan,
    CampaignRef,
    CloseInput,
    OpenedCampaign,
    ReminderInput,
    SnapshotInput,
    SnapshotResult,
)
from access.reviews import CampaignState, ItemState, ReviewDefinition
from access.types import AuditEntry
from activities import review_notices
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.liveness import heartbeats
from activities.review_deadlines import ReviewDeadlineActivities
from activities.review_revokes import ReviewRevokeActivities
from activities.review_rows import (
    ACTOR,
    INSERT_SNAPSHOT_ITEMS,
    audit_target,
    campaign_of,
    collection_paused,
    snapshot_item,
)
from store import review_scope
from store.audit_log import append_audit
from store.db import session_scope
from store.tables import AccessRequest, AuditEvent, ReviewCampaign, ReviewDefinitionRow, ReviewItem, User


def reminder_label(before: Any) -> str:
    return "at the deadline" if not before else f"{format_duration(before)} before the deadline"


def _justifications(session: Session, request_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        for request_id, status in session.execute(
            sa_select(col(AccessRequest.id), col(AccessRequest.status)).where(col(AccessRequest.id).in_(chunk))
        ):
            found[request_id] = str((status or {}).get("justification", ""))
    return found


class ReviewActivities:
    """Activities bound to one app DB (and, for revokes, one set of connector kinds)."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._deadlines = ReviewDeadlineActivities(db_url)
        self._revokes = ReviewRevokeActivities(db_url, connectors=connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.begin_review_campaign,
            self.snapshot_review_batch,
            self.open_review_campaign,
            self.remind_reviewers,
            self.close_review_campaign,
            *self._deadlines.all(),
            *self._revokes.all(),
        ]

    @activity.defn(name=names.BEGIN_REVIEW_CAMPAIGN)
    @heartbeats
    def begin_review_campaign(self, input: BeginCampaignInput) -> CampaignPlan:
        """Record the campaign (``starting``) with its definition as it is now; again, the one recorded."""
        with session_scope(self._db_url) as session:
            campaign = session.get(ReviewCampaign, input.campaign_id)
            if campaign is None:
                row = session.exec(
                    select(ReviewDefinitionRow).where(ReviewDefinitionRow.name == input.definition)
                ).first()
                if row is None:
                    raise ApplicationError(
                        f"there is no review definition {input.definition!r}",
                        type="NoSuchDefinition",
                        non_retryable=True,
                    )
                definition = ReviewDefinition.model_validate(row.body)
                now = input.started_at
                campaign = ReviewCampaign(
                    id=input.campaign_id,
                    definition=definition.name,
                    body=definition.model_dump(mode="json"),
                    state=CampaignState.STARTING,
                    started_by=input.started_by,
                    started_at=now,
                    deadline=now + definition.deadline,
                )
                session.add(campaign)
            definition = ReviewDefinition.model_validate(campaign.body)
        reminders = [(campaign.deadline - before, reminder_label(before)) for before in definition.reminders]
        reminders.sort()
        return CampaignPlan(
            campaign_id=campaign.id,
            started_at=campaign.started_at,
            deadline=campaign.deadline,
            reminders=[at for at, _ in reminders],
            reminder_labels=[label for _, label in reminders],
            default=definition.default,
            escalation_deadline=definition.escalation_deadline,
            revoke=definition.revoke,
        )

    @activity.defn(name=names.SNAPSHOT_REVIEW_BATCH)
    @heartbeats
    def snapshot_review_batch(self, input: SnapshotInput) -> SnapshotResult:
        """Snapshot the scope's grants after ``after_grant`` (by id, at most ``limit`` read), each with its
        reviewer, in one transaction: a retry starts after what an earlier attempt committed."""
        with collection_paused():
            with session_scope(self._db_url, write=False) as session:
                campaign, definition = campaign_of(session, input.campaign_id)
                done = session.execute(
                    sa_select(func.max(col(ReviewItem.grant_id))).where(col(ReviewItem.campaign_id) == campaign.id)
                ).scalar()
                after = max(input.after_grant, done or 0)
                batch = review_scope.scoped_grants(session, definition.scope, after_id=after, limit=input.limit)
                resolver = review_scope.ReviewerResolver(session, definition)
                reasons = _justifications(
                    session, [g.request_id for g in batch.grants if g.path == GrantPath.JIT and g.request_id]
                )
            rows = [snapshot_item(campaign.id, grant, resolver, reasons) for grant in batch.grants]
            if rows:
                with session_scope(self._db_url) as session:
                    session.execute(INSERT_SNAPSHOT_ITEMS, rows)
        last = batch.last if batch.last is not None else after
        return SnapshotResult(last_grant=last, items=len(rows), more=batch.more)

    @activity.defn(name=names.OPEN_REVIEW_CAMPAIGN)
    @heartbeats
    def open_review_campaign(self, input: CampaignRef) -> OpenedCampaign:
        """Count the snapshot and open the campaign (``review.started``), or record that nothing was in scope
        (``empty``, ``review.empty``); again, the state recorded."""
        with session_scope(self._db_url) as session:
            campaign, definition = campaign_of(session, input.campaign_id)
            if campaign.state != CampaignState.STARTING:
                return OpenedCampaign(
                    state=CampaignState(campaign.state), items=campaign.items, reviewers=campaign.reviewers
                )
            # One grouped pass counts the snapshot and says what each reviewer is told they were given.
            per_reviewer = review_notices.items_per_reviewer(session, campaign.id)
            unassigned = per_reviewer.pop("", 0)
            items = sum(per_reviewer.values()) + unassigned
            now = datetime.now(UTC)
            campaign.items, campaign.reviewers = items, len(per_reviewer)
            details: dict[str, Any] = {
                "definition": definition.name,
                "started_by": campaign.started_by,
                "items": items,
                "reviewers": campaign.reviewers,
                "deadline": campaign.deadline.isoformat(),
            }
            if items == 0:
                campaign.state = CampaignState.EMPTY
                campaign.closed_at, campaign.closed_by = now, ACTOR
                entry = AuditEntry(
                    actor=campaign.started_by,
                    action="review.empty",
                    target=audit_target(campaign.id),
                    reason="nothing was in scope: no campaign ran",
                    details=details,
                    at=now,
                )
            else:
                campaign.state = CampaignState.OPEN
                if unassigned:
                    details["unassigned"] = unassigned
                entry = AuditEntry(
                    actor=campaign.started_by,
                    action="review.started",
                    target=audit_target(campaign.id),
                    reason=f"{items} items for {campaign.reviewers} reviewers, due {campaign.deadline.isoformat()}",
                    details=details,
                    at=now,
                )
                # In the transaction that opens the campaign (its items are the reviewers' from now on): one
                # notice per reviewer, queued once (a retry finds the campaign open and returns above).
                review_notices.queue_assigned(
                    session, campaign, definition, per_reviewer, reason=review_notices.Reason.STARTED, seq="0",
                    deadline=campaign.deadline, now=now, routes=review_notices.routes(session),
                )  # fmt: skip
            session.add(campaign)
            append_audit(session, [entry])
            return OpenedCampaign(state=CampaignState(campaign.state), items=items, reviewers=campaign.reviewers)

    @activity.defn(name=names.REMIND_REVIEWERS)
    @heartbeats
    def remind_reviewers(self, input: ReminderInput) -> int:
        """``review.reminder`` for each reviewer with open items (their count; a copy to their manager when the
        definition says so). Sent once per reminder: a retry finds it sent. Returns the reviewers reminded."""
        target = audit_target(input.campaign_id)
        with session_scope(self._db_url) as session:
            sent = session.execute(
                sa_select(col(AuditEvent.id))
                .where(col(AuditEvent.target) == target, col(AuditEvent.action) == "review.reminder")
                .where(col(AuditEvent.reason) == input.label)
                .limit(1)
            ).first()
            if sent is not None:
                return 0
            campaign, definition = campaign_of(session, input.campaign_id)
            counts = session.execute(
                sa_select(col(ReviewItem.reviewer), func.count())
                .where(col(ReviewItem.campaign_id) == campaign.id, col(ReviewItem.state) == ItemState.OPEN)
                .where(col(ReviewItem.reviewer) != "")
                .group_by(col(ReviewItem.reviewer))
                .order_by(col(ReviewItem.reviewer))
            ).all()
            managers: dict[str, str | None] = {}
            if definition.remind_managers and counts:
                for email, manager in session.execute(
                    sa_select(col(User.email), col(User.manager_email)).where(
                        col(User.email).in_([r for r, _ in counts])
                    )
                ):
                    managers[email] = manager
            now = datetime.now(UTC)
            events = []
            for reviewer, open_items in counts:
                details: dict[str, Any] = {
                    "reviewer": reviewer,
                    "open": open_items,
                    "deadline": campaign.deadline.isoformat(),
                }
                if managers.get(reviewer):
                    details["copy_to"] = managers[reviewer]
                events.append(
                    AuditEntry(
                        actor=ACTOR,
                        action="review.reminder",
                        target=target,
                        reason=input.label,
                        details=details,
                        at=now,
                    )
                )
            append_audit(session, events)
            # With its audit events, once (a retry finds them above): each reviewer with items open, and the
            # copies to their managers.
            review_notices.queue_reminders(
                session, campaign, definition, {r: n for r, n in counts}, managers, label=input.label, now=now,
                routes=review_notices.routes(session),
            )  # fmt: skip
            return len(events)

    @activity.defn(name=names.CLOSE_REVIEW_CAMPAIGN)
    @heartbeats
    def close_review_campaign(self, input: CloseInput) -> None:
        """Close the campaign: every item is decided and carried out or being carried out (``review.closed``
        with the counts); again, nothing."""
        with session_scope(self._db_url) as session:
            campaign, _ = campaign_of(session, input.campaign_id)
            if campaign.state == CampaignState.CLOSED:
                return
            now = datetime.now(UTC)
            counts = session.execute(
                sa_select(col(ReviewItem.decision), col(ReviewItem.by_default), func.count())
                .where(col(ReviewItem.campaign_id) == campaign.id)
                .group_by(col(ReviewItem.decision), col(ReviewItem.by_default))
            ).all()
            details: dict[str, Any] = {"kept": 0, "revoked": 0, "already_gone": 0, "by_default": 0}
            for decision, by_default, count in counts:
                key = {"keep": "kept", "revoke": "revoked"}.get(decision or "", "already_gone")
                details[key] += count
                details["by_default"] += count if by_default else 0
            campaign.state, campaign.closed_at, campaign.closed_by = CampaignState.CLOSED, now, input.by
            session.add(campaign)
            reason = "closed early" if input.by != ACTOR else "the deadline passed"
            append_audit(
                session,
                [
                    AuditEntry(
                        actor=input.by,
                        action="review.closed",
                        target=audit_target(campaign.id),
                        reason=reason,
                        details=details,
                        at=now,
                    )
                ],
            )

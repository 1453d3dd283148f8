"""The break-glass review's bookkeeping: its state in the app DB, its audit event and its notices, in one transaction.

``BreakGlassReviewWorkflow`` calls ``record_break_glass_review`` (a local activity) each time the review moves:
opened when the emergency grant is made, then confirmed, condemned or unreviewed. The notices go into the
notification outbox in the same transaction (``store.notifications.queue``), so the security team hears of an
emergency grant exactly when it is recorded, never twice, whatever a chat outage does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session
from temporalio import activity

from access import names
from access.break_glass import BreakGlassReview, RecordReviewInput, ReviewState
from access.durations import format_duration
from access.notifications import Notice, NoticeKind
from access.requests import RequestStatus
from access.types import AuditEntry
from activities.notify.settings import stored_routes
from store import notifications as outbox
from store.audit_log import append_audit
from store.break_glass import HELD, emergencies, revocable_by
from store.catalog import find_user
from store.db import session_scope
from store.tables import AccessRequest
from store.tables import BreakGlassReview as ReviewRow


class BreakGlassActivities:
    """The review's activity, bound to one app DB."""

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_break_glass_review]

    @activity.defn(name=names.RECORD_BREAK_GLASS_REVIEW)
    def record_break_glass_review(self, input: RecordReviewInput) -> list[str]:
        """Write the review's state with its audit event and notices; returns who was escalated to. Written once:
        a retry after the commit finds the state there and adds nothing."""
        review = input.review
        now = datetime.now(UTC)
        with session_scope(self._db_url) as session:
            row = session.get(ReviewRow, review.request_id)
            if row is not None and row.state == review.state.value:
                return list(row.escalated_to)
            if review.state.flagged:
                review = review.model_copy(update={"escalated_to": _escalation(session, review)})
            revoking = _revoking(session, review) if review.state is ReviewState.CONDEMNED else None
            session.add(_row(review, row))
            append_audit(session, [_audit(review, input.action, revoking)])
            request = session.get(AccessRequest, review.request_id)
            status = RequestStatus.model_validate(request.status) if request is not None else None
            workflow = status.policy if status else ""
            notices = _notices(review, input.action, workflow=workflow, at=now, revoking=revoking)
            # A loud notice goes by every personal channel configured, whatever its person chose (the queue's rule).
            outbox.queue(session, notices, stored_routes(session), now=now)
        return review.escalated_to


def _escalation(session: Session, review: BreakGlassReview) -> list[str]:
    """Who hears of a condemned or unreviewed emergency grant: the notify groups' members and the requester's
    manager; the admins when that is nobody (someone must)."""
    requester = find_user(session, review.requester)
    manager = requester.manager_email if requester is not None else None
    people = set(review.notify) | ({manager} if manager else set())
    people.discard(review.requester)
    return sorted(people) or [admin for admin in outbox.admins(session) if admin != review.requester]


@dataclass(frozen=True)
class Revoking:
    """What condemning an emergency grant takes away: the requester's emergency grants of the role still held
    (``store.break_glass``), those its condemner revokes now and those they may not (not among their reviewers)."""

    revoked: list[str]
    left: list[str]

    def said(self, review: BreakGlassReview) -> str:
        """The sentence saying so, for the condemn's notice."""
        if not self.revoked and not self.left:
            return "Its grant had already ended: there was nothing to revoke."
        parts = []
        if review.request_id in self.revoked:
            parts.append("the grant is being revoked")
        elif review.request_id not in self.left:
            parts.append("its grant had already ended")
        others = [r for r in self.revoked if r != review.request_id]
        if others:
            parts.append(f"their other emergency grants of the role ({', '.join(others)}) are being revoked too")
        if self.left:
            parts.append(
                f"their emergency grants {', '.join(self.left)} of the role stay: {review.decided_by} is not among "
                "their reviewers, so an admin must revoke them"
            )
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."


def _revoking(session: Session, review: BreakGlassReview) -> Revoking:
    """The held emergency grants the condemner's revoke takes (``starter.services.break_glass`` revokes the same
    ones, by the same rule), and those it cannot."""
    held = emergencies(session, review.requester, review.role, HELD)
    decider = find_user(session, review.decided_by) if review.decided_by else None
    is_admin = decider is not None and decider.is_admin
    actor = review.decided_by or ""
    revoked = [s.id for s in held if revocable_by(s, actor, is_admin=is_admin)]
    return Revoking(revoked=revoked, left=[s.id for s in held if s.id not in revoked])


def _row(review: BreakGlassReview, row: ReviewRow | None) -> ReviewRow:
    row = row or ReviewRow(
        request_id=review.request_id,
        requester=review.requester,
        role=review.role,
        state=review.state.value,
        opened_at=review.opened_at,
        deadline=review.deadline,
    )
    row.requester = review.requester
    row.role = review.role
    row.justification = review.justification
    row.state = review.state.value
    row.opened_at = review.opened_at
    row.deadline = review.deadline
    row.reviewers = list(review.reviewers)
    row.notify = list(review.notify)
    row.escalated_to = list(review.escalated_to)
    row.expires_at = review.expires_at
    row.decided_by = review.decided_by
    row.decided_at = review.decided_at
    row.comment = review.comment
    return row


def _audit(review: BreakGlassReview, action: str, revoking: Revoking | None) -> AuditEntry:
    details: dict[str, Any] = {"role": review.role, "deadline": review.deadline.isoformat()}
    if review.state is ReviewState.OPEN:
        details |= {"reviewers": review.reviewers, "notified": review.notify}
    if review.state.flagged:
        details |= {"flagged": True, "escalated_to": review.escalated_to}
    if revoking is not None:
        details |= {"revoking": revoking.revoked, "not_revoked": revoking.left}
    return AuditEntry(
        actor=review.decided_by or "lapse",
        action=action,
        target=names.request_workflow_id(review.request_id),
        reason=review.comment or (review.justification if review.state is ReviewState.OPEN else ""),
        details=details,
        at=review.decided_at or review.opened_at,
    )


def _notices(
    review: BreakGlassReview, action: str, *, workflow: str, at: datetime, revoking: Revoking | None = None
) -> list[Notice]:
    """What each of the review's moves tells whom (a broadcast, recipient None, for webhooks and channels too)."""
    who, role = review.requester, review.role
    by = f"{review.deadline:%Y-%m-%d %H:%M} UTC"

    def told(kind: NoticeKind, people: Iterable[str | None], text: str, **details: Any) -> list[Notice]:
        everyone = sorted({p for p in people if p and p != who})
        recipients: list[str | None] = [*everyone, None]
        return [
            Notice(
                key=f"{review.request_id}:break-glass:{action}:{kind.value}:{person or '*'}",
                kind=kind,
                recipient=person,
                subject=review.request_id,
                role=role,
                requester=who,
                actor=review.decided_by or who,
                action=action,
                text=text,
                at=at,
                details={
                    "workflow": workflow,
                    "state": review.state.value,
                    "deadline": review.deadline.isoformat(),
                    "justification": review.justification,
                    **details,
                },
            )
            for person in recipients
        ]

    match review.state:
        case ReviewState.OPEN:
            until = f" until {review.expires_at:%H:%M} UTC" if review.expires_at else ""
            granted = (
                f"{who} used emergency access (break-glass) to {role}{until}, with no approval: "
                f"“{review.justification}”. Its review is due by {by}."
            )
            review_it = (
                f"Review {who}'s emergency access to {role}: confirm or condemn it by {by} "
                f"(you would have approved it; it was granted without you)."
            )
            return [
                *told(NoticeKind.BREAK_GLASS, [*review.notify, *review.reviewers], granted, loud=True),
                *[n for n in told(NoticeKind.BREAK_GLASS_REVIEW, review.reviewers, review_it) if n.recipient],
            ]
        case ReviewState.CONFIRMED:
            text = f"{review.decided_by} confirmed {who}'s emergency access to {role}."
            return told(NoticeKind.BREAK_GLASS_REVIEW, [], text, verdict="confirm")
        case ReviewState.CONDEMNED:
            revoking = revoking or Revoking(revoked=[], left=[])
            text = (
                f"{review.decided_by} condemned {who}'s emergency access to {role}: “{review.comment}”. "
                + revoking.said(review)
            )
            return told(
                NoticeKind.BREAK_GLASS_REVIEW,
                review.escalated_to,
                text,
                verdict="condemn",
                flagged=True,
                revoking=revoking.revoked,
                not_revoked=revoking.left,
            )
        case ReviewState.UNREVIEWED:
            window = format_duration(review.deadline - review.opened_at)
            text = f"Nobody reviewed {who}'s emergency access to {role} within {window}: it is flagged."
            return told(NoticeKind.BREAK_GLASS_REVIEW, review.escalated_to, text, flagged=True)

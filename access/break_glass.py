"""Break-glass: emergency access granted at once, for a short capped time, and reviewed afterwards.

A role whose organisation-file entry says ``break_glass:`` may be asked for as an emergency, with a reason. The
request skips its approval steps (rule ``break-glass``) and is granted at once; the people its normal rule would
have asked (the skipped approvers) must then confirm or condemn it within ``review_within``. A condemned or
unreviewed emergency grant is flagged and escalated. Plain rules on plain data: the request service plans with
them, ``BreakGlassReviewWorkflow`` and its activity judge and record the review with them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from access.durations import Duration, format_duration
from access.errors import Refusal, RefusalKind
from access.limits import check_text
from access.policy import InvalidRequest, NotRequestable, applicable_rules, resolve_approvers
from access.types import ApprovalPolicy, BreakGlass, BreakGlassPlan, Model, PolicyContext, RequestPlan

RULE = "break-glass"
"""The rule name an emergency request's plan carries (its approval steps were skipped)."""


class ReviewState(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    CONDEMNED = "condemned"
    UNREVIEWED = "unreviewed"
    """Nobody decided by the deadline: escalated like a condemned one (the grant has usually ended by then)."""

    @property
    def flagged(self) -> bool:
        """Needs the security team's attention: condemned, or nobody reviewed it in time."""
        return self in (ReviewState.CONDEMNED, ReviewState.UNREVIEWED)


class Verdict(StrEnum):
    CONFIRM = "confirm"
    CONDEMN = "condemn"


def plan_break_glass(
    policy: ApprovalPolicy | None,
    context: PolicyContext,
    allowance: BreakGlass | None,
    *,
    notify: list[str],
    duration: timedelta,
    justification: str,
) -> RequestPlan:
    """The plan of an emergency request for ``duration``, or a ``PolicyError`` saying why there is none.

    Only a role that allows it, with a reason, for at most its ``max_duration``, and only to someone a rule of the
    role's workflow lets ask for it at all. The reviewers are the people that rule's steps would have asked (the
    first rule that applies, as for a normal request; the requester never among them); ``notify`` is the members
    of the role's notify groups, resolved by the caller.
    """
    role = context.role.path
    if allowance is None:
        raise NotRequestable("emergency", f"{role} does not allow emergency (break-glass) access")
    if policy is None:
        raise NotRequestable("role", f"{role} has no approval workflow assigned, so it cannot be requested")
    if not justification.strip():
        raise InvalidRequest("justification", "an emergency (break-glass) request needs a reason")
    if duration <= timedelta(0):
        raise InvalidRequest("duration", "the duration must be longer than zero")
    if duration > allowance.max_duration:
        raise InvalidRequest(
            "duration",
            f"{format_duration(duration)} is longer than the {format_duration(allowance.max_duration)} "
            f"emergency (break-glass) access to {role} is capped at",
        )
    candidates = applicable_rules(policy, context)
    if not candidates:
        raise NotRequestable(
            "role",
            f"no rule of approval workflow {policy.name!r} lets {context.requester.email} request {role}, "
            "in an emergency or not",
        )
    # The rule a normal request of this length would have met (else the last that applies: the most lenient).
    skipped = next(
        (r for r in candidates if r.when.duration_at_most is None or duration <= r.when.duration_at_most),
        candidates[-1],
    )
    reviewers = sorted({person for step in skipped.steps for person in resolve_approvers(step.approvers, context)})
    return RequestPlan(
        policy=policy.name,
        rule=RULE,
        max_duration=allowance.max_duration,
        steps=[],
        distinct_approvers=True,
        reauthenticate_within=policy.reauthenticate_within,
        break_glass=BreakGlassPlan(
            reviewers=reviewers,
            notify=sorted(set(notify) - {context.requester.email}),
            review_within=allowance.review_within,
            skipped_rule=skipped.name,
        ),
    )


# --- the review -----------------------------------------------------------------------------


class BreakGlassReviewInput(Model):
    """What the request's run hands its review when the emergency grant is made."""

    request_id: str
    requester: str
    role: str
    justification: str
    plan: BreakGlassPlan
    granted_at: datetime
    expires_at: datetime | None = None


class VerdictInput(Model):
    """A reviewer's (or an admin's) verdict on an emergency grant."""

    request_id: str
    actor: str
    is_admin: bool = False
    verdict: Verdict
    comment: str = ""


class BreakGlassReview(Model):
    """An emergency grant's review as it stands: what ``GET /api/break-glass`` lists and the request page shows."""

    request_id: str
    requester: str
    role: str
    justification: str = ""
    state: ReviewState = ReviewState.OPEN
    opened_at: datetime
    deadline: datetime
    reviewers: list[str]
    notify: list[str] = []
    expires_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str = ""
    escalated_to: list[str] = []
    """Who was told of a condemned or unreviewed one: the notify groups' members and the requester's manager."""

    @property
    def flagged(self) -> bool:
        return self.state.flagged


class RecordReviewInput(Model):
    """One write of a review's state (the review's local activity): the row, its audit event, its notices."""

    review: BreakGlassReview
    action: str
    """``break_glass.opened``, ``break_glass.confirmed``, ``break_glass.condemned`` or ``break_glass.unreviewed``."""


def deadline_of(granted_at: datetime, review_within: Duration) -> datetime:
    return granted_at + review_within


def verdict_refusal(review: BreakGlassReview, verdict: VerdictInput) -> Refusal | None:
    """Why ``verdict.actor`` may not give this verdict now, or None: a reviewer or an admin, never the requester,
    while the review is open; condemning needs a comment saying why."""
    if verdict.request_id != review.request_id:
        return Refusal(
            RefusalKind.FORBIDDEN, f"this was sent for request {verdict.request_id}, not {review.request_id}"
        )
    if verdict.actor == review.requester:
        return Refusal(RefusalKind.FORBIDDEN, "you cannot review your own emergency access")
    if verdict.actor not in review.reviewers and not verdict.is_admin:
        return Refusal(
            RefusalKind.FORBIDDEN,
            f"{verdict.actor} is not a reviewer of emergency request {review.request_id} (its skipped approvers "
            "and admins are)",
        )
    if review.state is not ReviewState.OPEN:
        by = f" by {review.decided_by}" if review.decided_by else ""
        return Refusal(RefusalKind.CONFLICT, f"the review of request {review.request_id} is {review.state.value}{by}")
    why = check_text("comment", verdict.comment)
    if why is not None:
        return Refusal(RefusalKind.INVALID, why, field="comment")
    if verdict.verdict is Verdict.CONDEMN and not verdict.comment.strip():
        return Refusal(RefusalKind.INVALID, "condemning an emergency grant needs a comment saying why", field="comment")
    return None

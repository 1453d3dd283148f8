"""Reviewing, the deciding side: draft decisions, submitting them, reassigning an item. Listing the items is
``starter.services.review_items``.

A decision is a draft (keep, or revoke with a comment) until its reviewer submits it; once submitted it can still
change (a new draft, submitted again) until the campaign closes or the item is acted on. Nobody reviews their own
access, whichever way they try: an item whose holder is the caller is neither decided nor handed to them. Every
submitted decision is an audit event (``review.item.decided``), as is every reassignment.

Revoking a JIT grant is ending someone else's grant: where the grant's request started under an approval workflow
that says ``reauthenticate_within``, submitting such a revoke needs a sign-in that recent, as ending it directly
would (``starter.services.recent_sign_in``). A bulk decision is a few statements per 500 items, whatever their number.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from access.durations import parse_duration
from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from access.reviews import CampaignState, ItemDecision, ItemState, ReviewDefinition
from access.types import AuditEntry
from activities import review_notices
from starter.services import review_runs
from starter.services.fields import Email, FreeText
from starter.services.recent_sign_in import SignIn, require_recent
from starter.services.review_items import CHANGEABLE, LIVE, ItemIds, ItemOut, current, item_out, not_mine
from store import review_scope
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.settings import Settings
from store.tables import AccessRequest, ReviewCampaign, ReviewItem, User

CHUNK = 500
"""Ids per ``IN (...)``."""
Key = TypeVar("Key", int, str)


class DraftIn(BaseModel):
    items: ItemIds
    decision: ItemDecision | None = Field(description="`keep` or `revoke`; null clears the drafts.")
    comment: FreeText = Field(default="", description="Why: required for a revoke; one comment for every item.")


class SubmitIn(BaseModel):
    items: ItemIds | None = Field(default=None, description="These items' drafts; none given: every draft of yours.")


class ReassignIn(BaseModel):
    to: Email = Field(description="Who reviews it instead: someone its definition's reviewers or fallback resolve to.")
    comment: FreeText = ""


class Submitted(BaseModel):
    decided: int
    """Decisions recorded."""
    campaigns: list[str]
    notes: list[str] = []


# --- deciding ------------------------------------------------------------------------------------


def _chunks(ids: list[Key]) -> Iterator[list[Key]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _mine(session: Session, user: User, ids: list[int]) -> list[tuple[ReviewItem, ReviewCampaign]]:
    """The items, each the caller's to decide now; a refusal naming the first that is not."""
    found: dict[int, tuple[ReviewItem, ReviewCampaign]] = {}
    for chunk in _chunks(sorted(set(ids))):
        query = (
            select(ReviewItem, ReviewCampaign)
            .join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
            .where(col(ReviewItem.id).in_(chunk))
        )
        found |= {item.id or 0: (item, campaign) for item, campaign in session.exec(query)}
    for item_id in ids:
        if item_id not in found or found[item_id][0].reviewer != user.email:
            raise Refusal(RefusalKind.NOT_FOUND, f"item {item_id} is not one of yours to review", field="items")
        item, campaign = found[item_id]
        if item.user_email == user.email:
            raise Refusal(RefusalKind.FORBIDDEN, f"item {item_id} is your own access: nobody reviews their own")
        if campaign.state not in LIVE:
            raise Refusal(
                RefusalKind.CONFLICT, f"item {item_id}: campaign {campaign.id} is {campaign.state}", field="items"
            )
        if campaign.state == CampaignState.ESCALATED and not item.escalated:
            message = f"item {item_id}: campaign {campaign.id} is past its deadline (only escalated items are open)"
            raise Refusal(RefusalKind.CONFLICT, message, field="items")
        if item.state not in CHANGEABLE:
            message = f"item {item_id} was acted on already ({item.outcome or item.state}): it cannot change"
            raise Refusal(RefusalKind.CONFLICT, message, field="items")
    return [found[item_id] for item_id in dict.fromkeys(ids)]


def _lock_campaigns(session: Session, campaigns: set[str]) -> None:
    """The lock the campaign's workflow holds when it acts on items: a decision and an action never cross."""
    for campaign in sorted(campaigns):
        lock(session, "review-campaign", campaign)


def draft(settings: Settings, user: User, body: DraftIn) -> int:
    """Hold ``decision`` (with ``comment``) as the draft of each item; None clears them. Returns how many."""
    if body.decision is ItemDecision.REVOKE and not body.comment.strip():
        raise Refusal(RefusalKind.INVALID, "a revoke needs a comment: say why the access should go", field="comment")
    with session_scope(settings.db_url) as session:
        items = _mine(session, user, body.items)
        _lock_campaigns(session, {campaign.id for _, campaign in items})
        ids = [item.id or 0 for item, _ in items]
        for chunk in _chunks(ids):
            session.execute(
                update(ReviewItem)
                .where(col(ReviewItem.id).in_(chunk), col(ReviewItem.state).in_(CHANGEABLE))
                .values(
                    draft=body.decision.value if body.decision else None,
                    draft_comment=body.comment.strip() if body.decision else "",
                )
            )
    return len(ids)


class _SignInNeeded(Exception):
    """A submitted revoke ends a grant whose request's workflow asks for a sign-in more recent than the caller's."""

    def __init__(self, window: timedelta, policy: str, doing: str, campaign: str) -> None:
        super().__init__(doing)
        self.window, self.policy, self.doing, self.campaign = window, policy, doing, campaign


def _strictest_window(session: Session, drafted: list[tuple[ReviewItem, ReviewCampaign]]) -> _SignInNeeded | None:
    """Among the revokes of JIT grants, the one whose request recorded the shortest ``reauthenticate_within``."""
    revoking = {
        item.request_id: item
        for item, _ in drafted
        if item.draft == ItemDecision.REVOKE and item.path == GrantPath.JIT and item.request_id
    }
    found: _SignInNeeded | None = None
    for chunk in _chunks(sorted(revoking)):
        for request_id, status in session.exec(
            select(AccessRequest.id, AccessRequest.status).where(col(AccessRequest.id).in_(chunk))
        ):
            said = status.get("reauthenticate_within")
            if said is None:
                continue
            window = parse_duration(said)
            if found is None or window < found.window:
                item = revoking[request_id]
                doing = f"revoking {item.user_email or item.account}'s {item.role} (request {request_id})"
                found = _SignInNeeded(window, str(status.get("policy", "")), doing, item.campaign_id)
    return found


async def submit(client: Client, settings: Settings, user: User, body: SubmitIn, *, sign_in: SignIn) -> Submitted:
    """Record the drafts (of ``body.items``, or every one of the caller's) as decisions, each audited; then tell
    the campaigns' workflows, which carry out revokes at once where their definition says so. A revoke of a JIT
    grant whose request's workflow says ``reauthenticate_within`` needs ``sign_in`` that recent: short of it,
    nothing is recorded (refused, audited as ``review.submit.refused``)."""
    try:
        return await _submit(client, settings, user, body, sign_in)
    except _SignInNeeded as needed:  # outside the writing session, which rolled back: the refusal is audited
        require_recent(
            settings, sign_in, user, needed.window, policy=needed.policy, page="/reviews?state=drafted",
            doing=needed.doing, action="review.submit", target=needed.campaign,
        )  # fmt: skip
        raise AssertionError("require_recent refuses a sign-in _strictest_window found too old") from None


async def _submit(client: Client, settings: Settings, user: User, body: SubmitIn, sign_in: SignIn) -> Submitted:
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        if body.items is not None:
            chosen = _mine(session, user, body.items)
        else:
            query = (
                select(ReviewItem, ReviewCampaign)
                .join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
                .where(
                    ReviewItem.reviewer == user.email,
                    col(ReviewCampaign.state).in_(LIVE),
                    col(ReviewItem.state).in_(CHANGEABLE),
                    col(ReviewItem.draft).is_not(None),
                    not_mine(user.email),
                )
            )
            chosen = list(session.exec(query))
        drafted = [(item, campaign) for item, campaign in chosen if item.draft]
        needed = _strictest_window(session, drafted)
        if needed is not None and not sign_in.within(needed.window, now=now):
            raise needed
        _lock_campaigns(session, {campaign.id for _, campaign in drafted})
        events = []
        for item, campaign in drafted:
            decision = item.draft
            details: dict[str, Any] = {
                "item": item.id,
                "grant": item.grant_id,
                "user": item.user_email,
                "account": item.account,
                "role": item.role,
                "path": item.path,
                "decision": decision,
                "comment": item.draft_comment,
            }
            if item.decision and item.decision != decision:
                details["changed_from"] = item.decision
            events.append(
                AuditEntry(actor=user.email, action="review.item.decided", target=campaign.id, details=details, at=now)
            )
        alike: dict[tuple[str, str], list[int]] = {}  # a bulk decision is one comment for many items
        for item, _ in drafted:
            alike.setdefault((item.draft or "", item.draft_comment), []).append(item.id or 0)
        for (decision, comment), ids in alike.items():
            for chunk in _chunks(ids):
                # Only what is still changeable: the campaign's workflow may have acted on one meanwhile (on
                # PostgreSQL the row's condition is checked again once its lock is ours).
                changed = session.execute(
                    update(ReviewItem)
                    .where(col(ReviewItem.id).in_(chunk), col(ReviewItem.state).in_(CHANGEABLE))
                    .values(
                        state=ItemState.DECIDED.value,
                        decision=decision,
                        comment=comment,
                        decided_by=user.email,
                        decided_at=now,
                        by_default=False,
                        draft=None,
                        draft_comment="",
                    )
                )
                if changed.rowcount != len(chunk):  # type: ignore[attr-defined]
                    message = "an item was acted on while you submitted: nothing was recorded, submit again"
                    raise Refusal(RefusalKind.CONFLICT, message, field="items")
        append_audit(session, events)
    campaigns = sorted({campaign.id for _, campaign in drafted})
    notes = []
    for campaign_id in campaigns:
        try:
            await review_runs.submitted(client, settings, campaign_id)
        except RPCError as error:
            # The decisions are recorded: the workflow carries them out at the campaign's close all the same.
            notes.append(f"campaign {campaign_id}'s workflow was not told at once ({error.message})")
    return Submitted(decided=len(drafted), campaigns=campaigns, notes=notes)


def my_item(settings: Settings, user: User, item_id: int) -> ItemOut:
    """One of the caller's items to decide now."""
    with session_scope(settings.db_url, write=False) as session:
        ((item, campaign),) = _mine(session, user, [item_id])
        now = current(session, item)
    return item_out(item, campaign, now)


def reviewers_for(settings: Settings, user: User, item_id: int) -> list[str]:
    """Who the caller may hand the item to: people its definition's reviewers or fallback resolve to, active,
    never its holder, nor the caller."""
    with session_scope(settings.db_url, write=False) as session:
        ((item, campaign),) = _mine(session, user, [item_id])
        eligible = review_scope.eligible_reviewers(session, campaign, item)
    return [email for email in eligible if email not in (user.email, item.user_email)]


def reassign(settings: Settings, user: User, item_id: int, body: ReassignIn) -> ItemOut:
    """Hand an item to another eligible reviewer; its draft and any decision are dropped: the new reviewer
    decides. Refused for anyone not eligible, and always for the item's holder."""
    to = body.to.strip().lower()
    with session_scope(settings.db_url) as session:
        ((item, campaign),) = _mine(session, user, [item_id])
        _lock_campaigns(session, {campaign.id})
        if to == item.user_email:
            raise Refusal(RefusalKind.FORBIDDEN, f"{to} holds this access: nobody reviews their own", field="to")
        if to == user.email:
            raise Refusal(RefusalKind.INVALID, "the item is yours already", field="to")
        eligible = review_scope.eligible_reviewers(session, campaign, item)
        if to not in eligible:
            listed = ", ".join(e for e in eligible if e not in (user.email, item.user_email)) or "nobody else"
            message = f"{to} is not an eligible reviewer of item {item_id} (eligible: {listed})"
            raise Refusal(RefusalKind.INVALID, message, field="to")
        before = item.reviewer
        item.reviewer, item.state, item.draft, item.draft_comment = to, ItemState.OPEN.value, None, ""
        item.decision, item.comment, item.decided_by, item.decided_at = None, "", None, None
        session.add(item)
        details = {"item": item.id, "role": item.role, "user": item.user_email, "from": before, "to": to}
        if body.comment:
            details["comment"] = body.comment
        now = datetime.now(UTC)
        event = AuditEntry(
            actor=user.email, action="review.item.reassigned", target=campaign.id, details=details, at=now
        )
        append_audit(session, [event])
        # The new reviewer is told, with the reassignment (keyed by the item and this moment: each hand-over once).
        review_notices.queue_assigned(
            session, campaign, ReviewDefinition.model_validate(campaign.body), {to: 1},
            reason=review_notices.Reason.REASSIGNED, seq=f"{item.id}-{now:%Y%m%dT%H%M%S%f}",
            deadline=(campaign.escalation_deadline if item.escalated else None) or campaign.deadline, now=now,
            routes=review_notices.routes(session), actor=user.email,
            details={"role": item.role, "holder": item.user_email or item.account, "comment": body.comment},
        )  # fmt: skip
        return item_out(item, campaign, current(session, item))

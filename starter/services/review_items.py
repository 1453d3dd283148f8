"""Reviewing: a reviewer's items across the open campaigns, their draft decisions, submitting them, reassigning.

A decision is a draft (keep, or revoke with a comment) until its reviewer submits it; once submitted it can still
change (a new draft, submitted again) until the campaign closes or the item is acted on. Nobody reviews their own
access, whichever way they try: an item whose holder is the caller is neither listed nor decided nor handed to
them. Every submitted decision is an audit event (``review.item.decided``), as is every reassignment.

A page is one range of the (reviewer, state, campaign, id) index, keyset-paged, grouped by user or by role; a
bulk decision is a few statements per 500 items, whatever their number.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, or_, update
from sqlmodel import Session, col, func, select
from temporalio.client import Client
from temporalio.service import RPCError

from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from access.reviews import CampaignState, ItemDecision, ItemState
from access.types import AuditEntry
from starter.services import review_runs
from starter.services.fields import Email, FreeText, Name
from store import review_scope
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewItem, User

PAGE = 50
"""Items a page shows by default."""
MAX_PAGE = 500
MAX_BULK = 1000
"""Items one decision (or one submit) may name: a reviewer's whole screen and more, still one request body."""
CHUNK = 500
"""Ids per ``IN (...)``."""
LIVE = (CampaignState.OPEN.value, CampaignState.ESCALATED.value)
"""Campaigns whose items can be decided."""
CHANGEABLE = (ItemState.OPEN.value, ItemState.DECIDED.value)
UNKNOWN = "unknown"
"""How a last use nobody can tell is said: plainly."""

Group = Literal["user", "role"]
Shown = Literal["todo", "open", "drafted", "decided", "done", "all"]
ItemIds = Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]], Field(min_length=1, max_length=MAX_BULK)]


class ItemOut(BaseModel):
    """One access to review, as its campaign snapshotted it, with what a reviewer weighs."""

    id: int
    campaign: str
    deadline: datetime
    """When the campaign's default applies to it (the escalation's deadline for an escalated item)."""
    user: str | None
    """The holder; None for an account no Lapse user is linked to."""
    user_name: str
    account: str
    role: str
    path: GrantPath
    since: datetime
    expires_at: datetime | None
    """None: standing access."""
    granted_by: str
    """The request's id and justification (JIT), the policy's name (birthright), or "found in the target"."""
    manager: str | None
    active: bool
    """Whether the holder is an active user now (a leaver's access is an easy revoke)."""
    last_used: datetime | None
    last_used_said: str
    """``last_used`` as people read it, or "unknown" where no connector can tell."""
    revoking_means: str
    """What a revoke does to this item: a birthright grant becomes an exception on its policy."""
    escalated: bool
    state: ItemState
    draft: ItemDecision | None
    draft_comment: str
    decision: ItemDecision | None
    comment: str
    decided_by: str | None
    decided_at: datetime | None
    by_default: bool
    outcome: str | None
    error: str | None
    changeable: bool
    """Still decidable: its campaign is open and nothing acted on it yet."""


class ItemsPage(BaseModel):
    items: list[ItemOut]
    next_after: str | None
    """Pass as ``after`` for the next page; None on the last."""
    counts: dict[str, int]
    """The caller's items in open campaigns: ``open``, ``drafted`` (open or decided, with a draft not yet
    submitted), ``decided``, ``done``."""


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


class CampaignOfMine(BaseModel):
    id: str
    description: str
    deadline: datetime
    state: CampaignState
    open: int
    decided: int


# --- reading ------------------------------------------------------------------------------------


def _grant_origin(item: ReviewItem) -> str:
    if item.path == GrantPath.JIT:
        said = f"request {item.request_id}" if item.request_id else "a request"
        return f"{said}: {item.justification}" if item.justification else said
    if item.path == GrantPath.BIRTHRIGHT:
        return f"birthright policy {item.policy or item.justification or '?'}"
    return "found in the target (made outside Lapse)"


def _revoking_means(item: ReviewItem) -> str:
    if item.path == GrantPath.BIRTHRIGHT:
        return (
            f"a birthright grant: revoking it makes an exception on policy {item.policy or '?'} for this user, so the "
            "policy stops granting it to them (the next sync would otherwise grant it again)"
        )
    if item.path == GrantPath.JIT:
        return "ends the grant through its own request, now or when the campaign closes"
    return "removes it in the target, now or when the campaign closes"


def _out(item: ReviewItem, campaign: ReviewCampaign, name: str | None, active: bool | None) -> ItemOut:
    deadline = campaign.escalation_deadline if item.escalated and campaign.escalation_deadline else campaign.deadline
    return ItemOut(
        id=item.id or 0,
        campaign=item.campaign_id,
        deadline=deadline,
        user=item.user_email,
        user_name=name or "",
        account=item.account,
        role=item.role,
        path=GrantPath(item.path),
        since=item.granted_at,
        expires_at=item.expires_at,
        granted_by=_grant_origin(item),
        manager=item.manager_email,
        active=item.holder_active if active is None else active,
        last_used=item.last_used,
        last_used_said=item.last_used.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if item.last_used else UNKNOWN,
        revoking_means=_revoking_means(item),
        escalated=item.escalated,
        state=ItemState(item.state),
        draft=ItemDecision(item.draft) if item.draft else None,
        draft_comment=item.draft_comment,
        decision=ItemDecision(item.decision) if item.decision else None,
        comment=item.comment,
        decided_by=item.decided_by,
        decided_at=item.decided_at,
        by_default=item.by_default,
        outcome=item.outcome,
        error=item.error,
        changeable=item.state in CHANGEABLE
        and (campaign.state == CampaignState.OPEN or (campaign.state == CampaignState.ESCALATED and item.escalated)),
    )


def _not_mine(email: str) -> ColumnElement[bool]:
    """Nobody reviews their own access: not even an item that names them as its reviewer by mistake."""
    return or_(col(ReviewItem.user_email).is_(None), col(ReviewItem.user_email) != email)


def _cursor(key: str, item_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([key, item_id]).encode()).decode().rstrip("=")


def _uncursor(after: str) -> tuple[str, int]:
    try:
        key, item_id = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        if isinstance(key, str) and isinstance(item_id, int):
            return key, item_id
    except (ValueError, TypeError):
        pass
    raise Refusal(RefusalKind.INVALID, "after: not a cursor this API gave (next_after)", field="after")


def my_items(
    settings: Settings,
    user: User,
    *,
    group: Group = "user",
    shown: Shown = "todo",
    campaign: Name | None = None,
    holder: Email | None = None,
    role: Name | None = None,
    path: GrantPath | None = None,
    after: str | None = None,
    limit: int = PAGE,
) -> ItemsPage:
    """The caller's items in open campaigns, grouped by holder or by role (then by item), ``limit`` after
    ``after``. ``shown``: ``todo`` (open or decided: still changeable), ``open``, ``drafted``, ``decided``, ``done``
    or ``all``; ``role`` matches a role path or its start (``ledger/prod-db``)."""
    limit = max(1, min(limit, MAX_PAGE))
    key = func.coalesce(col(ReviewItem.user_email), "") if group == "user" else col(ReviewItem.role)
    query = (
        select(ReviewItem, ReviewCampaign, User.name, User.active)
        .join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
        .outerjoin(User, col(User.email) == ReviewItem.user_email)
        .where(ReviewItem.reviewer == user.email, col(ReviewCampaign.state).in_(LIVE), _not_mine(user.email))
    )
    states = {"todo": CHANGEABLE, "open": ("open",), "decided": ("decided",), "done": ("done",)}.get(shown)
    if states is not None:
        query = query.where(col(ReviewItem.state).in_(states))
    elif shown == "drafted":
        query = query.where(col(ReviewItem.draft).is_not(None), col(ReviewItem.state).in_(CHANGEABLE))
    if campaign:
        query = query.where(ReviewItem.campaign_id == campaign)
    if holder:
        query = query.where(ReviewItem.user_email == holder.strip().lower())
    if role:
        query = query.where(or_(col(ReviewItem.role) == role, col(ReviewItem.role).startswith(role.rstrip("/") + "/")))
    if path is not None:
        query = query.where(ReviewItem.path == path.value)
    if after:
        last_key, last_id = _uncursor(after)
        query = query.where(or_(key > last_key, (key == last_key) & (col(ReviewItem.id) > last_id)))
    with session_scope(settings.db_url, write=False) as session:
        rows = list(session.exec(query.order_by(key, col(ReviewItem.id)).limit(limit + 1)))
        counts = _counts(session, user.email)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_out(item, c, name, active) for item, c, name, active in rows]
    next_after = None
    if more and rows:
        last = rows[-1][0]
        next_after = _cursor((last.user_email or "") if group == "user" else last.role, last.id or 0)
    return ItemsPage(items=items, next_after=next_after, counts=counts)


def _counts(session: Session, email: str) -> dict[str, int]:
    query = (
        select(ReviewItem.state, col(ReviewItem.draft).is_not(None), func.count())
        .join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
        .where(ReviewItem.reviewer == email, col(ReviewCampaign.state).in_(LIVE), _not_mine(email))
        .group_by(ReviewItem.state, col(ReviewItem.draft).is_not(None))
    )
    counts = {"open": 0, "drafted": 0, "decided": 0, "done": 0}
    for state, drafted, n in session.exec(query):  # type: ignore[call-overload]
        counts[state] = counts.get(state, 0) + n
        if drafted and state in CHANGEABLE:
            counts["drafted"] += n
    return counts


def my_campaigns(settings: Settings, user: User) -> list[CampaignOfMine]:
    """The open campaigns the caller has items in, soonest deadline first, with how far they are."""
    query = (
        select(ReviewCampaign, ReviewItem.state, func.count())
        .join(ReviewItem, col(ReviewItem.campaign_id) == ReviewCampaign.id)
        .where(ReviewItem.reviewer == user.email, col(ReviewCampaign.state).in_(LIVE), _not_mine(user.email))
        .group_by(col(ReviewCampaign.id), ReviewItem.state)
    )
    found: dict[str, CampaignOfMine] = {}
    with session_scope(settings.db_url, write=False) as session:
        for campaign, state, n in session.exec(query):  # type: ignore[call-overload]
            mine = found.setdefault(
                campaign.id,
                CampaignOfMine(
                    id=campaign.id,
                    description=campaign.body.get("description", ""),
                    deadline=campaign.deadline,
                    state=CampaignState(campaign.state),
                    open=0,
                    decided=0,
                ),
            )
            if state == ItemState.OPEN:
                mine.open += n
            else:
                mine.decided += n
    return sorted(found.values(), key=lambda c: (c.deadline, c.id))


# --- deciding -----------------------------------------------------------------------------------


def _chunks(ids: list[int]) -> Iterator[list[int]]:
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


async def submit(client: Client, settings: Settings, user: User, body: SubmitIn) -> Submitted:
    """Record the drafts (of ``body.items``, or every one of the caller's) as decisions, each audited; then tell
    the campaigns' workflows, which carry out revokes at once where their definition says so."""
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
                    _not_mine(user.email),
                )
            )
            chosen = list(session.exec(query))
        drafted = [(item, campaign) for item, campaign in chosen if item.draft]
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
        holder = session.exec(select(User.name, User.active).where(User.email == item.user_email)).first()
    return _out(item, campaign, *(holder or (None, None)))


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
        event = AuditEntry(actor=user.email, action="review.item.reassigned", target=campaign.id, details=details)
        append_audit(session, [event])
        holder = session.exec(select(User.name, User.active).where(User.email == item.user_email)).first()
        return _out(item, campaign, *(holder or (None, None)))

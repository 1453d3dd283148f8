"""Reviewing, the reading side: a reviewer's items across the open campaigns, filtered, grouped by user or by role,
keyset-paged, and how far each campaign is. Deciding them is ``starter.services.review_decisions``.

Nobody reviews their own access: an item whose holder is the caller is never listed, nor counted.

A page is one range of an index: (reviewer, user_email, id) grouped by user, (reviewer, role, id) by role; the
cursor is the last item's (key, id) compared as a row, never an expression no index serves. Items of accounts no
Lapse user is linked to (no holder: NULL) come after everyone's, as their own range (reviewer, NULL, id), since
the databases disagree on where NULLs sort. The counts are one aggregate over the reviewer's items.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, or_, tuple_
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from access.reviews import CampaignState, ItemDecision, ItemState
from starter.services.fields import Email, Name
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, ReviewCampaign, ReviewItem, User

PAGE = 50
"""Items a page shows by default."""
MAX_PAGE = 500
MAX_BULK = 1000
"""Items one decision (or one submit) may name: a reviewer's whole screen and more, still one request body."""
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
    department: str | None
    """The holder's department as their identity source says now (the organisation file, the directory)."""
    active: bool
    """Whether the holder is an active user now (a leaver's access is an easy revoke)."""
    last_used: datetime | None
    """When the access was last seen in use: the later of the snapshot's and what discovery has seen since.
    None where no connector can tell (only PostgreSQL sessions and Active Directory logons are seen)."""
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


class CampaignOfMine(BaseModel):
    id: str
    description: str
    deadline: datetime
    state: CampaignState
    open: int
    decided: int


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


class Current(NamedTuple):
    """What an item shows as it is now rather than as its campaign snapshotted it: the holder as their identity
    source says (None: no such user) and the grant's last use as discovery has seen it since."""

    name: str | None = None
    active: bool | None = None
    department: str | None = None
    used: datetime | None = None


def with_current(query: Any) -> Any:
    """``query`` (over ``ReviewItem``) with ``Current``'s columns added last: the item's holder (outer-joined by
    email) and its grant (by its key: one lookup per item)."""
    return (
        query.add_columns(col(User.name), col(User.active), col(User.department), col(Grant.last_used_at))
        .outerjoin(User, col(User.email) == ReviewItem.user_email)
        .outerjoin(Grant, col(Grant.id) == ReviewItem.grant_id)
    )


def current(session: Session, item: ReviewItem) -> Current:
    """One item's ``Current``, for the calls that show a single item."""
    holder = session.exec(select(User.name, User.active, User.department).where(User.email == item.user_email))
    name, active, department = holder.first() or (None, None, None)
    used = session.exec(select(Grant.last_used_at).where(Grant.id == item.grant_id)).first()
    return Current(name, active, department, used)


def latest(*times: datetime | None) -> datetime | None:
    """The latest of the times known; None if none is."""
    return max((t for t in times if t is not None), default=None)


def item_out(item: ReviewItem, campaign: ReviewCampaign, now: Current = Current()) -> ItemOut:
    deadline = campaign.escalation_deadline if item.escalated and campaign.escalation_deadline else campaign.deadline
    last_used = latest(item.last_used, now.used)
    return ItemOut(
        id=item.id or 0,
        campaign=item.campaign_id,
        deadline=deadline,
        user=item.user_email,
        user_name=now.name or "",
        account=item.account,
        role=item.role,
        path=GrantPath(item.path),
        since=item.granted_at,
        expires_at=item.expires_at,
        granted_by=_grant_origin(item),
        manager=item.manager_email,
        department=now.department,
        active=item.holder_active if now.active is None else now.active,
        last_used=last_used,
        last_used_said=last_used.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if last_used else UNKNOWN,
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


def not_mine(email: str) -> ColumnElement[bool]:
    """Nobody reviews their own access: not even an item that names them as its reviewer by mistake."""
    return or_(col(ReviewItem.user_email).is_(None), col(ReviewItem.user_email) != email)


def _cursor(key: str | None, item_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([key, item_id]).encode()).decode().rstrip("=")


def _uncursor(after: str) -> tuple[str | None, int]:
    """The (key, id) of a page's last item; a None key: among the items with no holder (they come last)."""
    try:
        key, item_id = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        if (key is None or isinstance(key, str)) and isinstance(item_id, int) and not isinstance(item_id, bool):
            return key, item_id
    except (ValueError, TypeError):
        pass
    raise Refusal(RefusalKind.INVALID, "after: not a cursor this API gave (next_after)", field="after")


def _listed(
    email: str,
    *,
    shown: Shown,
    campaign: str | None,
    holder: str | None,
    role: str | None,
    path: GrantPath | None,
) -> SelectOfScalar[Any]:
    """The caller's items in live campaigns that the filters keep, with their campaign and ``Current``; unordered."""
    query: SelectOfScalar[Any] = with_current(
        select(ReviewItem, ReviewCampaign).join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
    ).where(ReviewItem.reviewer == email, col(ReviewCampaign.state).in_(LIVE), not_mine(email))
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
    return query


def _page_rows(session: Session, query: SelectOfScalar[Any], group: Group, after: str | None, n: int) -> list[Any]:
    """Up to ``n`` rows of ``query`` after the cursor, in the group's order, each part one index range."""
    last = _uncursor(after) if after else None
    item_id = col(ReviewItem.id)
    if group == "role":
        role = col(ReviewItem.role)
        if last is not None:
            query = query.where(tuple_(role, item_id) > tuple_(last[0] or "", last[1]))
        return list(session.exec(query.order_by(role, item_id).limit(n)))
    holder = col(ReviewItem.user_email)
    rows: list[Any] = []
    if last is None or last[0] is not None:  # the holders' items first, by holder then item
        named = query.where(holder.is_not(None))
        if last is not None:
            named = named.where(tuple_(holder, item_id) > tuple_(last[0], last[1]))
        rows = list(session.exec(named.order_by(holder, item_id).limit(n)))
    if len(rows) < n:  # then the accounts no Lapse user is linked to, by item
        nobody = query.where(holder.is_(None))
        if last is not None and last[0] is None:
            nobody = nobody.where(item_id > last[1])
        rows += list(session.exec(nobody.order_by(item_id).limit(n - len(rows))))
    return rows


def _page(
    session: Session,
    user: User,
    *,
    group: Group,
    shown: Shown,
    campaign: str | None,
    holder: str | None,
    role: str | None,
    path: GrantPath | None,
    after: str | None,
    limit: int,
    progress: list[tuple[str, str, bool, int]],
) -> ItemsPage:
    limit = max(1, min(limit, MAX_PAGE))
    query = _listed(user.email, shown=shown, campaign=campaign, holder=holder, role=role, path=path)
    rows = _page_rows(session, query, group, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [item_out(item, c, Current(*now)) for item, c, *now in rows]
    next_after = None
    if more and rows:
        last: ReviewItem = rows[-1][0]
        next_after = _cursor(last.user_email if group == "user" else last.role, last.id or 0)
    return ItemsPage(items=items, next_after=next_after, counts=_counts(progress))


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
    with session_scope(settings.db_url, write=False) as session:
        return _page(
            session, user, group=group, shown=shown, campaign=campaign, holder=holder, role=role, path=path,
            after=after, limit=limit, progress=_progress(session, user.email),
        )  # fmt: skip


def _progress(session: Session, email: str) -> list[tuple[str, str, bool, int]]:
    """The caller's items in live campaigns, counted by (campaign, state, drafted): one pass over their index."""
    drafted = col(ReviewItem.draft).is_not(None)
    query = (
        select(ReviewItem.campaign_id, ReviewItem.state, drafted, func.count())
        .join(ReviewCampaign, col(ReviewCampaign.id) == ReviewItem.campaign_id)
        .where(ReviewItem.reviewer == email, col(ReviewCampaign.state).in_(LIVE), not_mine(email))
        .group_by(ReviewItem.campaign_id, ReviewItem.state, drafted)
    )
    return [(c, state, bool(d), n) for c, state, d, n in session.exec(query)]  # type: ignore[call-overload]


def _counts(progress: list[tuple[str, str, bool, int]]) -> dict[str, int]:
    counts = {"open": 0, "drafted": 0, "decided": 0, "done": 0}
    for _, state, drafted, n in progress:
        counts[state] = counts.get(state, 0) + n
        if drafted and state in CHANGEABLE:
            counts["drafted"] += n
    return counts


def _campaigns(session: Session, progress: list[tuple[str, str, bool, int]]) -> list[CampaignOfMine]:
    ids = sorted({campaign for campaign, *_ in progress})
    found = {
        c.id: CampaignOfMine(
            id=c.id,
            description=c.body.get("description", ""),
            deadline=c.deadline,
            state=CampaignState(c.state),
            open=0,
            decided=0,
        )
        for c in session.exec(select(ReviewCampaign).where(col(ReviewCampaign.id).in_(ids)))
    }
    for campaign, state, _, n in progress:
        if state == ItemState.OPEN:
            found[campaign].open += n
        else:
            found[campaign].decided += n
    return sorted(found.values(), key=lambda c: (c.deadline, c.id))


def my_campaigns(settings: Settings, user: User) -> list[CampaignOfMine]:
    """The open campaigns the caller has items in, soonest deadline first, with how far they are."""
    with session_scope(settings.db_url, write=False) as session:
        return _campaigns(session, _progress(session, user.email))


def my_reviews(
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
) -> tuple[ItemsPage, list[CampaignOfMine]]:
    """``my_items`` and ``my_campaigns`` at once (the Reviews page shows both), counting the items once."""
    with session_scope(settings.db_url, write=False) as session:
        progress = _progress(session, user.email)
        page = _page(
            session, user, group=group, shown=shown, campaign=campaign, holder=holder, role=role, path=path,
            after=after, limit=limit, progress=progress,
        )  # fmt: skip
        return page, _campaigns(session, progress)

"""Which grants a review definition holds, and who reviews each: the preview, the snapshot and reassigning.

Everything is read in a few plain column queries and resolved in memory (``ReviewerResolver``), so previewing
or snapshotting 100,000 grants costs a handful of queries, never one per item. The same resolver answers the
snapshot, the preview, a leaver's items handed to the fallback, and who an item may be reassigned to.

Reviewers are picked among the people an approver stands for by a stable hash of the holder, so one person's
items go to the same member of a group (or the same owner of a role), and a group's members share the work.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from access.grants import GrantPath
from access.reviews import PreviewItem, ReviewDefinition, ReviewPreview, ReviewScope
from access.types import Approver, ApproverKind
from store import groups
from store.tables import Grant, Membership, ReviewCampaign, ReviewItem, Role, RoleOwner, User

SAMPLE = 20
"""Items a preview shows."""


@dataclass(frozen=True, slots=True)  # slots: a snapshot's batch makes tens of thousands
class ScopedGrant:
    """An active grant in a definition's scope, as the snapshot records it."""

    id: int
    account: str
    role: str
    user_email: str | None
    path: str
    policy: str | None
    request_id: str | None
    granted_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None
    """When discovery last saw it in use (``Grant.last_used_at``); None: unknown."""


def _scope_query(session: Session, scope: ReviewScope) -> Any:
    """Active grants matching every condition of ``scope`` (but ``jit_longer_than``: ``scoped_grants`` applies it)."""
    query = sa_select(
        col(Grant.id),
        col(Grant.account),
        col(Grant.role),
        col(Grant.user_email),
        col(Grant.path),
        col(Grant.policy),
        col(Grant.request_id),
        col(Grant.granted_at),
        col(Grant.expires_at),
        col(Grant.last_used_at),
    ).where(col(Grant.active).is_(True))
    if scope.integrations:
        query = query.where(or_(*(col(Grant.role).startswith(f"{i}/", autoescape=True) for i in scope.integrations)))
    if scope.resources:
        query = query.where(or_(*(col(Grant.role).startswith(f"{r}/", autoescape=True) for r in scope.resources)))
    if scope.roles:
        query = query.where(col(Grant.role).in_(sorted(scope.roles)))
    if scope.sensitivity:
        sensitive = sa_select(col(Role.path)).where(
            col(Role.sensitivity).in_(sorted(s.value for s in scope.sensitivity))
        )
        query = query.where(col(Grant.role).in_(sensitive))
    if scope.paths:
        query = query.where(col(Grant.path).in_(sorted(p.value for p in scope.paths)))
    if scope.group is not None:
        group_id = groups.resolve(session, [scope.group]).get(scope.group, -1)  # unknown: nobody
        members = sa_select(col(User.email)).join(Membership, col(Membership.user_id) == User.id)
        query = query.where(col(Grant.user_email).in_(members.where(col(Membership.group_id) == group_id)))
    if scope.manager is not None:
        reports = sa_select(col(User.email)).where(col(User.manager_email) == scope.manager.strip().lower())
        query = query.where(col(Grant.user_email).in_(reports))
    return query


def _long_enough(grant: ScopedGrant, longer_than: timedelta | None) -> bool:
    if longer_than is None or grant.path != GrantPath.JIT or grant.expires_at is None:
        return True  # standing JIT grants count as longer; other paths are not affected
    return grant.expires_at - grant.granted_at > longer_than


@dataclass(frozen=True)
class ScopeBatch:
    """One batch of a scope's grants, by id."""

    grants: list[ScopedGrant]
    last: int | None
    """The last grant id looked at, in scope or not (None: none was left)."""
    more: bool
    """Whether grants in scope are left after ``last``: a batch that ends the scope says so, so nobody asks for
    an empty one after it."""


def scoped_grants(session: Session, scope: ReviewScope, *, after_id: int = 0, limit: int | None = None) -> ScopeBatch:
    """The scope's grants with ids after ``after_id``, by id.

    ``limit`` bounds the rows read, so a batch may hold fewer items than that (``jit_longer_than``)."""
    query = _scope_query(session, scope).where(col(Grant.id) > after_id).order_by(col(Grant.id))
    if limit is not None:
        limit = max(limit, 1)
        query = query.limit(limit + 1)  # one more than asked: whether any is left after this batch
    rows = [ScopedGrant(*row) for row in session.execute(query)]  # type: ignore[arg-type]
    more = limit is not None and len(rows) > limit
    if more:
        rows.pop()
    last = rows[-1].id if rows else None
    return ScopeBatch([g for g in rows if _long_enough(g, scope.jit_longer_than)], last, more)


def _pick(people: Sequence[str], key: str) -> str:
    return people[zlib.crc32(key.encode()) % len(people)]


class ReviewerResolver:
    """Who reviews what under one definition, from the directory as read once (users, owners, groups)."""

    def __init__(self, session: Session, definition: ReviewDefinition) -> None:
        self.definition = definition
        self.users: dict[str, tuple[bool, str | None]] = {
            email: (active, manager)
            for email, active, manager in session.execute(
                sa_select(col(User.email), col(User.active), col(User.manager_email))
            )
        }
        approvers = [*definition.reviewers, *definition.fallback]
        self._owners: dict[str, list[str]] = {}
        if any(a.kind is ApproverKind.RESOURCE_OWNER for a in approvers):
            rows = session.execute(
                sa_select(col(Role.path), col(User.email))
                .join(RoleOwner, col(RoleOwner.role_id) == Role.id)
                .join(User, col(User.id) == RoleOwner.user_id)
                .where(col(User.active).is_(True))
                .order_by(col(User.email))
            )
            for path, email in rows:
                self._owners.setdefault(path, []).append(email)
        refs = {a.name for a in approvers if a.kind is ApproverKind.GROUP and a.name}
        resolved = groups.resolve(session, refs) if refs else {}
        members: dict[int, list[str]] = {}
        if resolved:
            rows = session.execute(
                sa_select(col(Membership.group_id), col(User.email))
                .join(User, col(User.id) == Membership.user_id)
                .where(col(Membership.group_id).in_(sorted(set(resolved.values()))), col(User.active).is_(True))
                .order_by(col(User.email))
            )
            for group_id, email in rows:
                members.setdefault(group_id, []).append(email)
        self._groups = {ref: members.get(resolved[ref], []) if ref in resolved else [] for ref in refs}

    def active(self, email: str | None) -> bool:
        return email is not None and self.users.get(email, (False, None))[0]

    def manager_of(self, email: str | None) -> str | None:
        """The holder's manager as recorded (active or not: the item shows it)."""
        return self.users.get(email, (False, None))[1] if email else None

    def _people(self, approver: Approver, holder: str | None, role: str) -> list[str]:
        match approver.kind:
            case ApproverKind.MANAGER:
                manager = self.manager_of(holder)
                return [manager] if manager and self.active(manager) else []
            case ApproverKind.RESOURCE_OWNER:
                return self._owners.get(role, [])
            case ApproverKind.GROUP:
                return self._groups.get(approver.name or "", [])
            case ApproverKind.USER:
                return [approver.name] if approver.name and self.active(approver.name) else []

    def _resolve(self, approvers: Iterable[Approver], holder: str | None, role: str, excluding: set[str]) -> list[str]:
        return sorted(
            {p for a in approvers for p in self._people(a, holder, role) if p != holder and p not in excluding}
        )

    def fallback(self, holder: str | None, role: str, *, excluding: set[str] | None = None) -> list[str]:
        """Everyone the fallback stands for on this item (never the holder)."""
        return self._resolve(self.definition.fallback, holder, role, excluding or set())

    def reviewer(self, holder: str | None, role: str, *, excluding: set[str] | None = None) -> tuple[str | None, bool]:
        """Who reviews an item, and whether that is the fallback's doing: the first of the reviewers that
        stands for someone but the holder (an unlinked account, no holder: straight to the fallback)."""
        skip = excluding or set()
        key = holder or role
        if holder is not None:
            for approver in self.definition.reviewers:
                people = self._resolve([approver], holder, role, skip)
                if people:
                    return _pick(people, key), False
        fallback = self.fallback(holder, role, excluding=skip)
        return (_pick(fallback, key) if fallback else None), True

    def eligible(self, holder: str | None, role: str) -> list[str]:
        """Everyone the definition's reviewers or fallback stand for on this item: who it may be handed to."""
        return self._resolve([*self.definition.reviewers, *self.definition.fallback], holder, role, set())


def preview(session: Session, definition: ReviewDefinition) -> ReviewPreview:
    """What the definition would hold if started now: counts by path, reviewers, items going to the fallback."""
    grants = scoped_grants(session, definition.scope).grants
    resolver = ReviewerResolver(session, definition)
    by_path: Counter[str] = Counter()
    reviewers: set[str] = set()
    to_fallback = 0
    sample: list[PreviewItem] = []
    for grant in grants:
        by_path[grant.path] += 1
        reviewer, fell_back = resolver.reviewer(grant.user_email, grant.role)
        to_fallback += fell_back
        if reviewer is not None:
            reviewers.add(reviewer)
        if len(sample) < SAMPLE:
            sample.append(
                PreviewItem(user_email=grant.user_email, role=grant.role, path=GrantPath(grant.path), reviewer=reviewer)
            )
    return ReviewPreview(
        items=len(grants), reviewers=len(reviewers), by_path=dict(by_path), to_fallback=to_fallback, sample=sample
    )


def resolve_reviewer(
    session: Session, definition: ReviewDefinition, item: ReviewItem, *, excluding: set[str]
) -> str | None:
    """Who reviews ``item`` now, leaving out ``excluding`` (one item; batches use ``ReviewerResolver``)."""
    reviewer, _ = ReviewerResolver(session, definition).reviewer(item.user_email, item.role, excluding=excluding)
    return reviewer


def campaign_definition(campaign: ReviewCampaign) -> ReviewDefinition:
    """The definition as it was when the campaign started."""
    return ReviewDefinition.model_validate(campaign.body)


def eligible_reviewers(session: Session, campaign: ReviewCampaign, item: ReviewItem) -> list[str]:
    """Who ``item`` may be handed to: the people its campaign's reviewers or fallback stand for on it, active,
    never its holder (the current reviewer is among them when still eligible)."""
    return ReviewerResolver(session, campaign_definition(campaign)).eligible(item.user_email, item.role)

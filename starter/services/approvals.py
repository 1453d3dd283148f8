"""The approvals page's cards: each request the caller can decide now, with what an approver weighs.

A card adds to the request's status its requester and their manager, the role's sensitivity, the requester's
current access on the same resource and their recent requests for it. A page of cards is read in a fixed
number of queries, whatever its length (one per kind of fact, each for every card at once).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from access.requests import ExtensionState, ExtensionStatus, RequestState, RequestStatus, StepStatus
from starter.services.requests import awaiting_decision
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, Grant, Role, User

CARDS_PAGE = 25
"""How many cards the approvals page shows at a time: a screenful or two, each worth reading."""
RECENT = 5
"""How many of the requester's other requests for the same resource a card shows, newest first."""


class Person(BaseModel):
    email: str
    name: str = ""
    """Empty for someone the directory no longer knows."""


class HeldAccess(BaseModel):
    """An active grant the requester holds on the card's resource."""

    role: str
    path: str
    """``jit``, ``birthright`` or ``external``."""
    expires_at: datetime | None
    request_id: str | None


class PastRequest(BaseModel):
    """Another request of the requester's for a role of the card's resource."""

    id: str
    role: str
    state: RequestState
    created_at: datetime


class ApprovalCard(BaseModel):
    request: RequestStatus
    extension: ExtensionStatus | None
    """The pending extension to decide, when the card is one (the grant is active)."""
    requester: Person
    manager: Person | None
    resource: str
    """``integration/resource``: what "the same resource" means below."""
    sensitivity: str | None
    """None for a role the catalog no longer has."""
    role_description: str = ""
    held: list[HeldAccess]
    """The requester's active grants on the resource, this request's own included."""
    recent: list[PastRequest]
    """The requester's latest other requests for roles of the resource, newest first."""

    @property
    def steps(self) -> list[StepStatus]:
        """The steps of the round being decided: the extension's, or the request's own."""
        return self.extension.steps if self.extension is not None else self.request.steps


class ApprovalsPage(BaseModel):
    cards: list[ApprovalCard]
    next_after: str | None
    """The request to page on after (``?after=``); None on the last page."""


def approval_cards(
    settings: Settings, user: User, *, after: str | None = None, limit: int | None = None
) -> ApprovalsPage:
    """The cards of what ``user`` can decide now, the ``limit`` (``CARDS_PAGE``) oldest after request ``after``."""
    page = awaiting_decision(settings, user, after=after, limit=limit or CARDS_PAGE)
    waiting = page.requests
    if not waiting:
        return ApprovalsPage(cards=[], next_after=page.next_after)
    requesters = {status.requester for status in waiting}
    with session_scope(settings.db_url, write=False) as session:
        people = _people(session, requesters)
        roles = _roles(session, {status.role for status in waiting})
        resources = {resource_id for _, _, resource_id in roles.values()}
        held = _held(session, requesters, resources)
        recent = _recent(session, requesters, resources)
    cards = []
    for status in waiting:
        requester, manager = people.get(status.requester, (Person(email=status.requester), None))
        sensitivity, description, resource_id = roles.get(status.role, (None, "", -1))
        mine = (status.requester, resource_id)  # a role gone from the catalog (-1) has no resource to look at
        cards.append(
            ApprovalCard(
                request=status,
                extension=_pending_extension(status),
                requester=requester,
                manager=manager,
                resource=status.role.rpartition("/")[0],
                sensitivity=sensitivity,
                role_description=description,
                held=held.get(mine, []),
                recent=[r for r in recent.get(mine, []) if r.id != status.id][:RECENT],
            )
        )
    return ApprovalsPage(cards=cards, next_after=page.next_after)


def _pending_extension(status: RequestStatus) -> ExtensionStatus | None:
    latest = status.extensions[-1] if status.extensions else None
    pending = status.state is RequestState.ACTIVE and latest is not None and latest.state is ExtensionState.PENDING
    return latest if pending else None


def _people(session: Session, emails: Iterable[str]) -> dict[str, tuple[Person, Person | None]]:
    """Each requester, and their manager (by name where the directory knows them)."""
    manager = aliased(User)
    query = (
        select(User.email, User.name, User.manager_email, manager.name)
        .outerjoin(manager, col(manager.email) == User.manager_email)
        .where(col(User.email).in_(sorted(emails)))
    )
    found: dict[str, tuple[Person, Person | None]] = {}
    for email, name, manager_email, manager_name in session.exec(query):
        boss = Person(email=manager_email, name=manager_name or "") if manager_email else None
        found[email] = (Person(email=email, name=name), boss)
    return found


def _roles(session: Session, paths: Iterable[str]) -> dict[str, tuple[str, str, int]]:
    """Each role's sensitivity, description and resource."""
    query = select(Role.path, Role.sensitivity, Role.description, Role.resource_id).where(
        col(Role.path).in_(sorted(paths))
    )
    return {
        path: (sensitivity, description, resource) for path, sensitivity, description, resource in session.exec(query)
    }


def _held(
    session: Session, requesters: Iterable[str], resources: Iterable[int]
) -> dict[tuple[str, int], list[HeldAccess]]:
    """The requesters' active grants on roles of these resources, by (requester, resource)."""
    query = (
        sa_select(
            col(Grant.user_email),
            col(Role.resource_id),
            col(Grant.role),
            col(Grant.path),
            col(Grant.expires_at),
            col(Grant.request_id),
        )
        .join(Role, col(Role.path) == Grant.role)
        .where(
            col(Grant.active).is_(True),
            col(Grant.user_email).in_(sorted(requesters)),
            col(Role.resource_id).in_(sorted(resources)),
        )
        .order_by(col(Grant.role), col(Grant.id))
    )
    held: dict[tuple[str, int], list[HeldAccess]] = defaultdict(list)
    for email, resource, role, path, expires_at, request_id in session.execute(query):
        if email is not None:
            held[(email, resource)].append(
                HeldAccess(role=role, path=path, expires_at=expires_at, request_id=request_id)
            )
    return held


def _recent(
    session: Session, requesters: Iterable[str], resources: Iterable[int]
) -> dict[tuple[str, int], list[PastRequest]]:
    """The requesters' latest requests for roles of these resources (one more than a card shows, as a card
    leaves out its own), newest first, by (requester, resource)."""
    rank = (
        func.row_number()
        .over(
            partition_by=(col(AccessRequest.requester), col(Role.resource_id)),
            order_by=(col(AccessRequest.created_at).desc(), col(AccessRequest.id)),
        )
        .label("rank")
    )
    ranked = (
        sa_select(
            col(AccessRequest.id).label("id"),
            col(AccessRequest.requester).label("requester"),
            col(AccessRequest.role).label("role"),
            col(AccessRequest.state).label("state"),
            col(AccessRequest.created_at).label("created_at"),
            col(Role.resource_id).label("resource_id"),
            rank,
        )
        .join(Role, col(Role.path) == AccessRequest.role)
        .where(col(AccessRequest.requester).in_(sorted(requesters)), col(Role.resource_id).in_(sorted(resources)))
        .subquery()
    )
    query = sa_select(ranked).where(ranked.c.rank <= RECENT + 1).order_by(ranked.c.rank)
    recent: dict[tuple[str, int], list[PastRequest]] = defaultdict(list)
    for row in session.execute(query):
        recent[(row.requester, row.resource_id)].append(
            PastRequest(id=row.id, role=row.role, state=RequestState(row.state), created_at=row.created_at)
        )
    return recent

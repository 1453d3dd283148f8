"""The permissions table (admins): every active grant, filtered by user, role and path, paged by keyset."""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel import col, select

from access.grants import GrantPath
from starter.services.authorization import require_admin
from starter.services.grants import GrantOut
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, User

PAGE_SIZE = 50


class GrantFilter(BaseModel):
    user: str | None = None
    """The holder's email (exact, case-insensitive)."""
    role: str | None = None
    """A role path or the start of one: ``ledger`` or ``ledger/prod-db`` match every role under it."""
    path: GrantPath | None = None


class GrantPage(BaseModel):
    grants: list[GrantOut]
    next_after: int | None
    """The ``after`` that reads the next page; None on the last."""


def list_permissions(
    settings: Settings, admin: User, filters: GrantFilter, *, after: int | None = None, limit: int = PAGE_SIZE
) -> GrantPage:
    """Active grants matching ``filters``, by id, the ``limit`` after grant ``after``."""
    require_admin(admin)
    query = select(Grant).where(col(Grant.active).is_(True))
    if filters.user:
        query = query.where(Grant.user_email == filters.user.strip().lower())
    if filters.role:
        role = filters.role.strip().strip("/")
        query = query.where((col(Grant.role) == role) | col(Grant.role).startswith(f"{role}/", autoescape=True))
    if filters.path is not None:
        query = query.where(Grant.path == filters.path.value)
    if after is not None:
        query = query.where(col(Grant.id) > after)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(query.order_by(col(Grant.id)).limit(limit + 1)).all()
    page = [GrantOut.of(g) for g in rows[:limit]]
    return GrantPage(grants=page, next_after=page[-1].id if len(rows) > limit else None)

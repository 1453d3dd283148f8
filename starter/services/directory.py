"""The directory (admins): run its sync now, see how the last run went, and list the groups it knows by source."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col
from temporalio.client import Client

from access import names
from starter.services.authorization import require_admin
from starter.services.syncs import SyncStateOut, next_run, sync_state, trigger_now
from store import groups as group_refs
from store.db import session_scope
from store.settings import Settings
from store.tables import Group, Membership, User


class SyncTriggered(BaseModel):
    triggered: bool
    schedule: str


class GroupOut(BaseModel):
    source: str
    """``file`` (the organisation file) or the directory integration's name."""
    name: str
    external_id: str | None
    """The group's identity in its source (entryUUID / objectGUID / DN; the name for the file's)."""
    reference: str
    """How a policy names exactly this group, whatever groups are created later."""
    members: int
    namesakes: int
    """Other sources' (or entries') groups of the same name: a bare or ``source:name`` reference may not
    name this one."""


async def sync_now(client: Client, settings: Settings, admin: User) -> SyncTriggered:
    """Run the directory sync now, through its schedule (one run at a time, at most one more waiting)."""
    require_admin(admin)
    await trigger_now(client, settings, names.DIRECTORY_SYNC)
    return SyncTriggered(triggered=True, schedule=names.DIRECTORY_SYNC)


def last_sync(settings: Settings, admin: User) -> SyncStateOut:
    """The directory sync's last run: when it started and finished, what it found, or why it failed."""
    require_admin(admin)
    return sync_state(settings, names.DIRECTORY_SYNC)


async def next_sync(client: Client, settings: Settings, admin: User) -> datetime | None:
    """When the directory sync's schedule runs next; None if paused, missing or Temporal is out of reach."""
    require_admin(admin)
    return await next_run(client, names.DIRECTORY_SYNC)


def list_groups(settings: Settings, admin: User, *, source: str | None, name: str | None, limit: int) -> list[GroupOut]:
    """Groups by source, with the reference that names each (policies refer to groups by reference)."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        query = sa_select(col(Group.id), col(Group.source), col(Group.name), col(Group.external_id))
        if source is not None:
            query = query.where(col(Group.source) == source)
        if name is not None:
            query = query.where(col(Group.name) == name)
        rows = [
            group_refs.GroupRow(id=i, source=s, name=n, external_id=e)
            for i, s, n, e in session.execute(query.order_by(col(Group.name), col(Group.source)).limit(limit))
        ]
        ids = [row.id for row in rows]
        members = dict(
            session.execute(
                sa_select(col(Membership.group_id), func.count())
                .where(col(Membership.group_id).in_(ids))
                .group_by(col(Membership.group_id))
            ).all()
        )
        names_ = sorted({row.name for row in rows})
        counts = Counter(session.execute(sa_select(col(Group.name)).where(col(Group.name).in_(names_))).scalars())
    return [
        GroupOut(
            source=row.source,
            name=row.name,
            external_id=row.external_id,
            reference=group_refs.exact(row) if row.external_id else group_refs.display(row.source, row.name),
            members=members.get(row.id, 0),
            namesakes=counts[row.name] - 1,
        )
        for row in rows
    ]

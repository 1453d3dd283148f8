"""/api/directory: run the directory sync now, see how its last run went, list the groups by source (admins)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col

from access import names
from starter.api.deps import ClientDep, CurrentUser, SettingsDep, require_admin
from starter.api.fields import Name
from starter.api.problems import responses
from starter.syncs import SyncStateOut, trigger_now
from store import groups as group_refs
from store.db import session_scope
from store.tables import Group, Membership, SyncState

router = APIRouter(prefix="/api/directory", tags=["directory"], responses=responses(401, 403))


class SyncTriggered(BaseModel):
    triggered: bool
    schedule: str


@router.post("/sync", status_code=202, responses=responses(413, 503))
async def sync_now(user: CurrentUser, settings: SettingsDep, client: ClientDep) -> SyncTriggered:
    """Run the directory sync now, through its schedule (one run at a time, at most one more waiting)."""
    require_admin(user)
    await trigger_now(client, settings, names.DIRECTORY_SYNC)
    return SyncTriggered(triggered=True, schedule=names.DIRECTORY_SYNC)


@router.get("/sync")
def sync_state(user: CurrentUser, settings: SettingsDep) -> SyncStateOut:
    """The directory sync's last run: when it started and finished, what it found, or why it failed."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        return SyncStateOut.of(session.get(SyncState, names.DIRECTORY_SYNC), names.DIRECTORY_SYNC)


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


@router.get("/groups")
def list_groups(
    user: CurrentUser,
    settings: SettingsDep,
    source: Annotated[Name | None, Query(description="Only this source's groups (`file` or an integration).")] = None,
    name: Annotated[Name | None, Query(description="Only groups of this name, from every source.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[GroupOut]:
    """Groups by source, with the reference that names each (policies refer to groups by reference)."""
    require_admin(user)
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
        names = sorted({row.name for row in rows})
        counts = Counter(session.execute(sa_select(col(Group.name)).where(col(Group.name).in_(names))).scalars())
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

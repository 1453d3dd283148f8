"""Bring the app DB's users, groups and memberships in line with one identity source's snapshot.

Plain rows and bulk statements: a source of 50,000 users costs a handful of queries. A source's
groups are its own, keyed by their identity in it; what changed is gathered in ``Changes`` for the
sync's result and audit log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, and_, bindparam, update
from sqlalchemy import delete as sa_delete
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col
from temporalio.exceptions import ApplicationError

from access.syncs import Joiner, Leaver
from activities.connectors.ldap_directory import DirectoryGroup, DirectoryUser
from activities.directory_sources import Source
from store import groups
from store.tables import Group, Membership, User

MASS_LEAVERS_FLOOR = 10
"""Below this many active users, any share may leave in one run."""


class Changes:
    """What a run changed, gathered across its sources."""

    def __init__(self) -> None:
        self.joiners: dict[str, Joiner] = {}
        self.leavers: dict[str, Leaver] = {}
        self.added: dict[str, set[str]] = defaultdict(set)
        self.removed: dict[str, set[str]] = defaultdict(set)
        self.groups_changed = False
        self.users = 0
        self.groups = 0


def apply_source(session: Session, source: Source, changes: Changes, *, max_leavers: float = 1.0) -> None:
    """Bring one source's users, groups and memberships into the app DB (plain rows, bulk statements).

    Refused (nothing changes) when more than ``max_leavers`` of the source's active users would leave at
    once: far more likely a wrong filter or an emptied OU than a real exodus, and it would take everyone's access.
    """
    existing = {
        row.email: row
        for row in session.execute(
            sa_select(
                col(User.id),
                col(User.email),
                col(User.name),
                col(User.manager_email),
                col(User.department),
                col(User.active),
                col(User.source),
                col(User.external_id),
            )
        )
    }
    bound = {email: row.external_id for email, row in existing.items() if row.source == source.name}
    users = _dedupe(source.snapshot.users, bound)
    changes.users += len(users)
    new_rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for user in users.values():
        active = not user.disabled
        row = existing.get(user.email)
        if row is None:
            new_rows.append(
                {
                    "email": user.email,
                    "name": user.name,
                    "manager_email": user.manager_email,
                    "department": user.department,
                    "active": active,
                    "is_admin": False,
                    "source": source.name,
                    "external_id": user.external_id or None,
                }
            )
            if active:
                changes.joiners[user.email] = Joiner(email=user.email, name=user.name, manager=user.manager_email)
            continue
        wanted = {
            "name": user.name,
            "manager_email": user.manager_email,
            "department": user.department,
            "active": active,
            "source": source.name,
            "external_id": user.external_id or None,
        }
        changed = {key: value for key, value in wanted.items() if getattr(row, key) != value}
        if not changed:
            continue
        updates.append({"id": row.id, **changed})
        if "active" in changed and active:
            changes.joiners[user.email] = Joiner(email=user.email, name=user.name, manager=user.manager_email)
            changes.leavers.pop(user.email, None)
        elif "active" in changed:
            changes.leavers[user.email] = Leaver(email=user.email, why=f"disabled in {source.name}")
    if source.complete:
        for email, row in existing.items():
            if row.source == source.name and row.active and email not in users:
                updates.append({"id": row.id, "active": False})
                changes.leavers[email] = Leaver(email=email, why=f"gone from {source.name}")
    had = sum(1 for row in existing.values() if row.source == source.name and row.active)
    leaving = sum(1 for update_ in updates if update_.get("active") is False)
    if had >= MASS_LEAVERS_FLOOR and leaving > max_leavers * had:
        raise ApplicationError(
            f"{source.name} would make {leaving} of its {had} active users leavers at once (more than "
            f"{max_leavers:.0%}): refused, nothing changed. Check the source's filters and bases; if this is "
            "right, raise LAPSE_DIRECTORY_MAX_LEAVERS for one run.",
            type="TooManyLeavers",
            non_retryable=True,
        )
    if new_rows:
        session.execute(_table(User).insert(), new_rows)
    if updates:
        session.execute(update(User), updates)

    source_groups = _apply_groups(session, source, changes)
    user_ids = {email: user_id for user_id, email in session.execute(sa_select(col(User.id), col(User.email)))}
    _apply_memberships(session, source, users, source_groups, user_ids, changes)


def _table(model: type[SQLModel]) -> Table:
    """The model's table, for Core statements: ORM bulk inserts cost seconds at hundreds of thousands of rows."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def _dedupe(users: Iterable[DirectoryUser], bound: Mapping[str, str | None]) -> dict[str, DirectoryUser]:
    """Users by email. When two entries carry the same address, the entry the user is already bound to
    (``bound``: email → external id) wins, else the first: a new entry cannot take a user over by copying
    their email."""
    by_email: dict[str, DirectoryUser] = {}
    for user in users:
        held = by_email.get(user.email)
        if held is None or (held.external_id != bound.get(user.email) and user.external_id == bound.get(user.email)):
            by_email[user.email] = user
    return by_email


def _group_key(group: DirectoryGroup) -> str:
    """A group's identity in its source: its external id (the file's: its name)."""
    return group.external_id or group.dn.strip().lower() or group.name


def _apply_groups(session: Session, source: Source, changes: Changes) -> dict[str, tuple[int, str]]:
    """Create and update the source's own groups, keyed by external id; returns every group of the source
    as key → (id, display name).

    Only this source's groups are touched: another source's group of the same name (the organisation
    file's ``security``, another directory's) is a different group, never merged with or taken over.
    """
    wanted: dict[str, DirectoryGroup] = {}
    for group in source.snapshot.groups:
        wanted.setdefault(_group_key(group), group)
    changes.groups += len(wanted)
    rows = list(
        session.execute(
            sa_select(col(Group.id), col(Group.name), col(Group.description), col(Group.external_id)).where(
                col(Group.source) == source.name
            )
        )
    )
    by_key = {row.external_id: row for row in rows if row.external_id is not None}
    # Groups from before migration 0007 have no external id yet: adopted by name where that is unambiguous.
    unkeyed: dict[str, list[Any]] = defaultdict(list)
    for old in rows:
        if old.external_id is None:
            unkeyed[old.name].append(old)
    named = Counter(group.name for group in wanted.values())
    new_rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, group in wanted.items():
        row = by_key.get(key)
        if row is None and named[group.name] == 1 and len(unkeyed.get(group.name, ())) == 1:
            row = unkeyed.pop(group.name)[0]
            updates.append({"id": row.id, "external_id": key})
        if row is None:
            new_rows.append(
                {"name": group.name, "description": group.description, "source": source.name, "external_id": key}
            )
            continue
        changed = {}
        if row.name != group.name:  # renamed in the source: the same group, under its new name
            changed["name"] = group.name
        if group.description and group.description != row.description:
            changed["description"] = group.description
        if changed:
            updates.append({"id": row.id, **changed})
    if new_rows:
        session.execute(_table(Group).insert(), new_rows)
        changes.groups_changed = True
    if updates:
        session.execute(update(Group), updates)
    return {
        external_id or f"#{group_id}": (group_id, groups.display(source.name, name))
        for group_id, name, external_id in session.execute(
            sa_select(col(Group.id), col(Group.name), col(Group.external_id)).where(col(Group.source) == source.name)
        )
    }


def _apply_memberships(
    session: Session,
    source: Source,
    users: Mapping[str, DirectoryUser],
    source_groups: Mapping[str, tuple[int, str]],
    user_ids: Mapping[str, int],
    changes: Changes,
) -> None:
    """Make the source's groups hold the members it lists.

    A complete source decides its groups' whole membership; the organisation file only that of
    the users it lists (others may come from another file).
    """
    desired: set[tuple[int, int]] = set()
    for group in source.snapshot.groups:
        group_id = source_groups[_group_key(group)][0]
        desired |= {(user_ids[email], group_id) for email in group.member_emails if email in user_ids}
    managed_users = None if source.complete else {user_ids[email] for email in users}
    current: set[tuple[int, int]] = set()
    for user_id, group_id in session.execute(
        sa_select(col(Membership.user_id), col(Membership.group_id)).where(
            col(Membership.group_id).in_([group_id for group_id, _ in source_groups.values()])
        )
    ):
        if managed_users is None or user_id in managed_users:
            current.add((user_id, group_id))
    added, removed = desired - current, current - desired
    if not added and not removed:
        return
    changes.groups_changed = True
    if added:
        session.execute(_table(Membership).insert(), [{"user_id": u, "group_id": g} for u, g in sorted(added)])
    if removed:
        table = _table(Membership)
        statement = sa_delete(table).where(and_(table.c.user_id == bindparam("u"), table.c.group_id == bindparam("g")))
        session.connection().execute(statement, [{"u": u, "g": g} for u, g in sorted(removed)])
    emails = {user_id: email for email, user_id in user_ids.items()}
    names_of = dict(source_groups.values())
    for user_id, group_id in added:
        changes.added[emails[user_id]].add(names_of[group_id])
    for user_id, group_id in removed:
        changes.removed[emails[user_id]].add(names_of[group_id])

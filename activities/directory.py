"""The directory sync: users, groups, memberships, managers and the disabled flag from the identity source.

The sources are the integrations marked ``directory`` (LDAP), or the organisation file when
there is none. Each run reads the sources whole, then brings the app DB in line in one
transaction with bulk reads and writes (a run over 50,000 users issues a handful of queries),
and reports joiners, movers and leavers. What leavers still hold — open requests, approvals
waiting on them — is found afresh every run, so a run that stopped halfway is caught up by the next.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, and_, bindparam, update
from sqlalchemy import delete as sa_delete
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, select
from temporalio import activity
from temporalio.client import ScheduleOverlapPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.connectors import ConnectorError
from access.requests import RequestState, RequestStatus
from access.syncs import (
    ApprovalToReresolve,
    DirectorySyncResult,
    Joiner,
    Leaver,
    LeaverWork,
    Mover,
    RequestToEnd,
    SyncInput,
    TriggerInput,
)
from access.types import AuditEntry
from activities.connectors.ldap import DirectoryGroup, DirectorySnapshot, DirectoryUser, LdapDirectory
from activities.integrations import as_activity_error
from store import groups
from store.db import append_audit, session_scope
from store.org import DEMO_ORG, OrgError, OrgFile
from store.tables import AccessRequest, Group, Integration, Membership, SyncState, User

log = logging.getLogger(__name__)

FILE_SOURCE = "file"
LISTED = 1000
"""At most this many joiners, movers and leavers are listed in a result (the counts are exact)."""
MASS_LEAVERS_FLOOR = 10
"""Below this many active users, any share may leave in one run."""
WORK_PER_RUN = 2000
"""At most this many requests are handed to one run's workflow; the next run finds the rest."""

_OPEN = (RequestState.PENDING.value, RequestState.PROVISIONING.value, RequestState.ACTIVE.value)


@dataclass(frozen=True)
class Source:
    """One identity source, as read for this run."""

    name: str
    snapshot: DirectorySnapshot
    complete: bool
    """The whole organisation: its users that are absent are leavers, and its groups hold exactly the
    members it lists. The organisation file is not complete: ``lapse load-org`` may have loaded others."""


DirectoryReader = Callable[[Mapping[str, Any]], LdapDirectory]


class DirectoryActivities:
    """The directory sync's activities, bound to one app DB and one organisation file."""

    def __init__(
        self,
        db_url: str,
        *,
        org_file: Path | None = None,
        reader: DirectoryReader = LdapDirectory,
        max_leavers: float = 0.2,
    ) -> None:
        self._db_url = db_url
        self._org_file = org_file or DEMO_ORG
        self._reader = reader
        self._max_leavers = max_leavers

    def all(self) -> list[Callable[..., Any]]:
        return [self.sync_directory, self.trigger_sync]

    @activity.defn(name=names.SYNC_DIRECTORY)
    def sync_directory(self, input: SyncInput) -> DirectorySyncResult:
        """Read the sources, bring users, groups and memberships in line, and find the leavers' requests."""
        started = datetime.now(UTC)
        self._started(started)
        try:
            sources = self._read_sources()
            activity.heartbeat()
            with session_scope(self._db_url) as session:
                return _sync(session, sources, input.reason, started, max_leavers=self._max_leavers)
        except ConnectorError as error:
            self._failed(str(error))
            raise as_activity_error(error) from error
        except ApplicationError as error:
            self._failed(error.message)
            raise

    @activity.defn(name=names.TRIGGER_SYNC)
    async def trigger_sync(self, input: TriggerInput) -> bool:
        """Run another sync now through its schedule; False (and a log line) if it has no schedule."""
        try:
            # Through the schedule, whose overlap policy keeps one run going and at most one waiting.
            handle = activity.client().get_schedule_handle(input.schedule_id)
            await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            log.warning("no schedule %s to trigger: %s", input.schedule_id, error.message)
            return False
        return True

    def _read_sources(self) -> list[Source]:
        with session_scope(self._db_url, write=False) as session:
            directories = session.exec(
                select(Integration).where(col(Integration.directory).is_(True)).order_by(Integration.name)
            ).all()
        if not directories:
            return [Source(FILE_SOURCE, _read_org_file(self._org_file), complete=False)]
        sources: list[Source] = []
        for integration in directories:
            if integration.kind != "ldap":
                raise ApplicationError(
                    f"integration {integration.name} is marked as the directory, but only ldap integrations can be "
                    f"read as one (it is {integration.kind})",
                    type="NotADirectory",
                    non_retryable=True,
                )
            try:
                reader = self._reader(integration.config)
            except ValidationError as error:
                raise ApplicationError(
                    f"integration {integration.name} is misconfigured: {error}",
                    type="InvalidConfig",
                    non_retryable=True,
                ) from error
            sources.append(Source(integration.name, reader.read(), complete=True))
        return sources

    def _started(self, at: datetime) -> None:
        with session_scope(self._db_url) as session:
            state = session.get(SyncState, names.DIRECTORY_SYNC) or SyncState(name=names.DIRECTORY_SYNC)
            state.started_at, state.finished_at = at, None
            session.add(state)

    def _failed(self, reason: str) -> None:
        now = datetime.now(UTC)
        with session_scope(self._db_url) as session:
            state = session.get(SyncState, names.DIRECTORY_SYNC) or SyncState(name=names.DIRECTORY_SYNC)
            state.finished_at, state.error = now, reason
            session.add(state)
            entry = AuditEntry(actor="lapse", action="directory.failed", target="directory", reason=reason, at=now)
            append_audit(session, [entry])


def _read_org_file(path: Path) -> DirectorySnapshot:
    """The organisation file's users and groups, as a directory would report them."""
    try:
        org = OrgFile.read(path)
    except (OrgError, OSError) as error:
        raise ApplicationError(
            f"cannot read the organisation file: {error}", type="BadOrgFile", non_retryable=True
        ) from error
    users = tuple(
        DirectoryUser(
            dn="",
            email=entry.email.strip().lower(),
            name=entry.name,
            manager_email=entry.manager.strip().lower() if entry.manager else None,
            disabled=not entry.active,
        )
        for entry in org.users
    )
    members: dict[str, set[str]] = defaultdict(set)
    for entry in org.users:
        for group in entry.groups:
            members[group].add(entry.email.strip().lower())
    described = {group.name: group.description for group in org.groups}
    groups = tuple(
        DirectoryGroup(
            dn="",
            name=name,
            description=described.get(name, ""),
            member_emails=tuple(sorted(members[name])),
            external_id=name,  # the file's groups are keyed by name, in their own source
        )
        for name in sorted(set(described) | set(members))
    )
    return DirectorySnapshot(users=users, groups=groups)


# --- bringing the app DB in line ---------------------------------------------------------------


class _Changes:
    """What a run changed, gathered across its sources."""

    def __init__(self) -> None:
        self.joiners: dict[str, Joiner] = {}
        self.leavers: dict[str, Leaver] = {}
        self.added: dict[str, set[str]] = defaultdict(set)
        self.removed: dict[str, set[str]] = defaultdict(set)
        self.groups_changed = False
        self.users = 0
        self.groups = 0


def _sync(
    session: Session, sources: list[Source], reason: str, started: datetime, *, max_leavers: float = 1.0
) -> DirectorySyncResult:
    now = datetime.now(UTC)
    changes = _Changes()
    for source in sources:
        _apply(session, source, changes, max_leavers=max_leavers)
    joined = [changes.joiners[email] for email in sorted(changes.joiners)]
    left = [changes.leavers[email] for email in sorted(changes.leavers)]
    movers = [
        Mover(email=email, added=sorted(changes.added[email]), removed=sorted(changes.removed[email]))
        for email in sorted(set(changes.added) | set(changes.removed))
        if email not in changes.joiners and email not in changes.leavers
    ]
    if joined:  # a joiner's groups are all those they hold now, whichever source manages them
        held: dict[str, list[str]] = defaultdict(list)
        for email, group_source, group in session.execute(
            sa_select(col(User.email), col(Group.source), col(Group.name))
            .join(Membership, col(Membership.user_id) == User.id)
            .join(Group, col(Group.id) == Membership.group_id)
            .where(col(User.email).in_(sorted(changes.joiners)))
        ):
            held[email].append(groups.display(group_source, group))
        for joiner in joined:
            joiner.groups = sorted(held.get(joiner.email, []))
    result = DirectorySyncResult(
        sources=[source.name for source in sources],
        users=changes.users,
        groups=changes.groups,
        joined=len(joined),
        moved=len(movers),
        left=len(left),
        joiners=joined[:LISTED],
        movers=movers[:LISTED],
        leavers=left[:LISTED],
        groups_changed=changes.groups_changed,
        work=_leaver_work(session),
    )
    summary = _summary(result)
    events = [
        AuditEntry(
            actor="lapse",
            action="user.joined",
            target=j.email,
            reason=f"joined through the directory sync ({reason})",
            details={"name": j.name, "manager": j.manager, "groups": j.groups},
            at=now,
        )
        for j in joined
    ]
    events += [
        AuditEntry(
            actor="lapse", action="user.moved", target=m.email, details={"added": m.added, "removed": m.removed}, at=now
        )
        for m in movers
    ]
    events += [AuditEntry(actor="lapse", action="user.left", target=lv.email, reason=lv.why, at=now) for lv in left]
    events.append(
        AuditEntry(actor="lapse", action="directory.synced", target="directory", reason=reason, details=summary, at=now)
    )
    append_audit(session, events)
    state = session.get(SyncState, names.DIRECTORY_SYNC) or SyncState(name=names.DIRECTORY_SYNC)
    state.started_at, state.finished_at, state.summary, state.error = started, now, summary, None
    session.add(state)
    return result


def _summary(result: DirectorySyncResult) -> dict[str, Any]:
    """What the sync state and the audit log keep of a run: counts, the listed people, the requests to act on."""
    summary = result.model_dump(mode="json", exclude={"work"})
    work = result.work
    summary["requests_to_revoke"] = sum(1 for r in work.end if r.state != RequestState.PENDING.value)
    summary["requests_to_cancel"] = sum(1 for r in work.end if r.state == RequestState.PENDING.value)
    summary["approvals_to_reresolve"] = len(work.reresolve)
    summary["requests_deferred"] = work.more  # beyond this run's share: the next run takes them
    return summary


def _apply(session: Session, source: Source, changes: _Changes, *, max_leavers: float = 1.0) -> None:
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


def _apply_groups(session: Session, source: Source, changes: _Changes) -> dict[str, tuple[int, str]]:
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
    changes: _Changes,
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


# --- what leavers still hold ---------------------------------------------------------------------


def _leaver_work(session: Session) -> LeaverWork:
    """Open requests of users who are no longer active, and open steps that name such users as approvers.

    Found from the whole app DB, not just this run's leavers: what an earlier run left undone is
    picked up again. The request workflows decide for themselves (a request may have moved on).
    """
    inactive = set(session.execute(sa_select(col(User.email)).where(col(User.active).is_(False))).scalars())
    if not inactive:
        return LeaverWork()
    end = [
        RequestToEnd(id=request_id, requester=requester, state=state)
        for request_id, requester, state in session.execute(
            sa_select(col(AccessRequest.id), col(AccessRequest.requester), col(AccessRequest.state))
            .join(User, col(User.email) == AccessRequest.requester)
            .where(col(User.active).is_(False), col(AccessRequest.state).in_(_OPEN))
            .order_by(col(AccessRequest.created_at))
            .limit(WORK_PER_RUN + 1)
        )
    ]
    reresolve: list[ApprovalToReresolve] = []
    awaiting = (RequestState.PENDING.value, RequestState.ACTIVE.value)  # an active grant may await an extension
    for request_id, requester, status in session.execute(
        sa_select(col(AccessRequest.id), col(AccessRequest.requester), col(AccessRequest.status))
        .where(col(AccessRequest.state).in_(awaiting))
        .order_by(col(AccessRequest.created_at))
    ):
        if requester in inactive:
            continue
        step = RequestStatus.model_validate(status).open_step()
        left = sorted(set(step.eligible) & inactive) if step else []
        if left:
            reresolve.append(ApprovalToReresolve(id=request_id, left=left))
    more = len(end) + len(reresolve) > WORK_PER_RUN
    end = end[:WORK_PER_RUN]
    return LeaverWork(end=end, reresolve=reresolve[: WORK_PER_RUN - len(end)], more=more)

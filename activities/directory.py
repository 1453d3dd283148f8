"""The directory sync: users, groups, memberships, managers and the disabled flag from the identity source.

The sources (``activities.directory_sources``) are the integrations marked ``directory`` (LDAP), or
the organisation file when there is none. Each run reads the sources whole, then brings the app DB in
line in one transaction (``activities.directory_apply``), and reports joiners, movers and leavers.
What leavers still hold — open requests, approvals waiting on them — is found afresh every run, so a
run that stopped halfway is caught up by the next.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names
from access.connectors import ConnectorError
from access.requests import RequestState, RequestStatus
from access.syncs import ApprovalToReresolve, DirectorySyncResult, LeaverWork, Mover, RequestToEnd, SyncInput
from access.types import AuditEntry
from activities import metrics
from activities.connectors.ldap_directory import LdapDirectory
from activities.directory_apply import Changes, apply_source
from activities.directory_sources import DirectoryReader, Source, read_sources
from activities.targets import as_activity_error
from store import groups
from store.audit_log import append_audit
from store.credentials_end import end_credentials
from store.db import session_scope
from store.org import DEMO_ORG
from store.org_open import awaiting_first_run, unresolved_after
from store.tables import AccessRequest, Group, Membership, SyncState, User

LISTED = 1000
"""At most this many joiners, movers and leavers are listed in a result (the counts are exact)."""
WORK_PER_RUN = 2000
"""At most this many requests are handed to one run's workflow; the next run finds the rest."""

_OPEN = (RequestState.PENDING.value, RequestState.PROVISIONING.value, RequestState.ACTIVE.value)


class DirectoryActivities:
    """The directory sync's activity, bound to one app DB and one organisation file."""

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
        return [self.sync_directory]

    @activity.defn(name=names.SYNC_DIRECTORY)
    def sync_directory(self, input: SyncInput) -> DirectorySyncResult:
        """Read the sources, bring users, groups and memberships in line, and find the leavers' requests."""
        started = datetime.now(UTC)
        self._started(started)
        try:
            sources = read_sources(self._db_url, self._org_file, self._reader)
            activity.heartbeat()
            with session_scope(self._db_url) as session:
                result = _sync(session, sources, input.reason, started, max_leavers=self._max_leavers)
            metrics.sync_finished("directory", started, items=result.users)
            return result
        except ConnectorError as error:
            self._failed(str(error))
            raise as_activity_error(error) from error
        except ApplicationError as error:
            self._failed(error.message)
            raise

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


def _sync(
    session: Session, sources: list[Source], reason: str, started: datetime, *, max_leavers: float = 1.0
) -> DirectorySyncResult:
    now = datetime.now(UTC)
    changes = Changes()
    awaited = awaiting_first_run(session, "group", [source.name for source in sources])  # birthright references
    for source in sources:
        apply_source(session, source, changes, max_leavers=max_leavers)
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
    # A leaver's tokens and sessions end for good: coming back (re-enabled) brings neither back.
    end_credentials(session, {lv.email: f"left: {lv.why}" for lv in left}, actor="lapse", at=now)
    state = session.get(SyncState, names.DIRECTORY_SYNC) or SyncState(name=names.DIRECTORY_SYNC)
    state.started_at, state.finished_at, state.summary, state.error = started, now, summary, None
    session.add(state)
    if unresolved := unresolved_after(session, awaited, "the first directory sync"):
        append_audit(session, [unresolved])  # and listed as unresolved, no longer as waiting for this run
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

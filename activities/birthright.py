"""Activities of the birthright sync: store the plan in the app DB, apply it in batches, record the outcome.

The plan's items live in ``BirthrightItem`` rows, never in workflow history, so a run of any size
resumes where it was. Each item is applied in three steps (``store.ledger``): a short transaction
that re-reads the ledger under the account and role's lock and claims the grant or revoke, the
target's call with no transaction open, and a short transaction that records it and marks the item
done: a retried or resumed batch never grants twice, and overlapping JIT or external grants keep
access (the target is called for the first active grant of an account and role, and revoked only
when the last one ends).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names
from access.connectors import Connector, ConnectorError, RetryableError, Target
from access.syncs import (
    BirthrightBatchInput,
    BirthrightBatchResult,
    BirthrightFinishInput,
    BirthrightPlanned,
    BirthrightSyncResult,
    SyncInput,
)
from access.types import AuditEntry
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.connectors.ledger import LedgerConnector
from activities.integrations import as_activity_error, resolve_target
from store import catalog
from store import groups as group_refs
from store.db import append_audit, lock, session_scope
from store.ledger import HELD, PROVISIONING, active_grants, claim_revoke, end, revoke_in_flight
from store.tables import (
    BirthrightItem,
    BirthrightPolicy,
    Grant,
    Membership,
    SyncState,
    User,
)

INSERT_CHUNK = 5000
LEDGER_CHUNK = 100
"""Items of ledger-only roles applied in one transaction."""
ACTOR = "lapse"


class _Refused(Exception):
    """The item cannot be applied until someone changes something (a role or integration is gone)."""


@dataclass(frozen=True)
class _Resolved:
    integration: str
    target: Target
    connector: Connector


@dataclass(frozen=True)
class _Claimed:
    """An item's claim: the grants whose target call is due, and those a revoke ended without one."""

    resolved: _Resolved
    calls: list[tuple[int, str]]
    """(grant id, account) to grant (``add``) or revoke (``remove``) in the target."""
    covered: list[tuple[int, str]]
    """(grant id, account) a ``remove`` ended in the claim: another grant still covers the account."""


class _Targets:
    """Roles and connectors resolved once per batch: a connector may cache accounts (LDAP DNs)."""

    def __init__(self, connectors: Mapping[str, ConnectorFactory]) -> None:
        self._connectors = connectors
        self._roles: dict[str, _Resolved] = {}
        self._by_integration: dict[str, Connector] = {}

    def records_only(self, session: Session, path: str) -> bool:
        """Whether the role's grant is the ledger row alone (the built-in ledger connector)."""
        try:
            return isinstance(self.resolve(session, path).connector, LedgerConnector)
        except _Refused:
            return False

    def resolve(self, session: Session, path: str) -> _Resolved:
        if path in self._roles:
            return self._roles[path]
        try:
            integration, target, connector = resolve_target(session, path, self._connectors)
        except ApplicationError as error:
            raise _Refused(error.message) from error
        # One connector per integration for the batch: it may cache accounts (LDAP DNs).
        connector = self._by_integration.setdefault(integration.name, connector)
        if connector.per_grant_accounts:
            raise _Refused(
                f"integration {integration.name} makes a login per grant (ephemeral credentials): "
                "birthright access, which has no end, cannot go through it"
            )
        self._roles[path] = _Resolved(integration.name, target, connector)
        return self._roles[path]


class BirthrightActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan_birthright_sync, self.apply_birthright_batch, self.finish_birthright_sync]

    @activity.defn(name=names.PLAN_BIRTHRIGHT_SYNC)
    def plan_birthright_sync(self, input: SyncInput) -> BirthrightPlanned:
        """Plan from the app DB as it is now and store the items under a new run id (earlier runs' go)."""
        began = datetime.now(UTC)
        with session_scope(self._db_url, write=False) as session:
            inputs = catalog.birthright_inputs(session)
        plan = inputs.plan()
        run = uuid.uuid4().hex[:16]
        # Plain tuples through the driver's executemany: hundreds of thousands of rows in a second or two.
        steps = [("remove", i.user, i.role, i.policy) for i in plan.remove]  # removes first: leavers go at once
        steps += [("add", i.user, i.role, i.policy) for i in plan.add]
        steps += [("relabel", r.user, r.role, r.policy) for r in plan.relabel]
        rows = [(run, seq, *step, False) for seq, step in enumerate(steps, start=1)]
        summary = plan.summary()
        with session_scope(self._db_url) as session:
            session.execute(delete(BirthrightItem))
            connection = session.connection()
            mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
            columns = "run, seq, action, user_email, role, policy, done"
            statement = f"INSERT INTO birthrightitem ({columns}) VALUES ({', '.join([mark] * 7)})"
            for start in range(0, len(rows), INSERT_CHUNK):
                connection.exec_driver_sql(statement, rows[start : start + INSERT_CHUNK])
            state = session.get(SyncState, names.BIRTHRIGHT_SYNC) or SyncState(name=names.BIRTHRIGHT_SYNC)
            state.started_at = began
            state.finished_at = None
            state.error = None
            planned_at = datetime.now(UTC).isoformat()
            state.summary = {"run": run, "reason": input.reason, "planned_at": planned_at, "planned": summary}
            session.add(state)
        return BirthrightPlanned(
            run=run,
            add=len(plan.add),
            remove=len(plan.remove),
            relabel=len(plan.relabel),
            frozen_roles=plan.frozen_roles,
        )

    @activity.defn(name=names.APPLY_BIRTHRIGHT_BATCH)
    def apply_birthright_batch(self, input: BirthrightBatchInput) -> BirthrightBatchResult:
        """Apply up to ``limit`` items after ``after_seq`` in order, heartbeating the last one handled.

        A retry resumes after the heartbeat. A target's retryable error fails the attempt (the
        activity retries with backoff); on the last attempt, or for a permanent error, the item is
        recorded as failed and the batch carries on: one broken role does not block everyone.
        """
        details = activity.info().heartbeat_details
        after = max(input.after_seq, int(details[0]) if details else 0)
        with session_scope(self._db_url, write=False) as session:
            items = session.exec(
                select(BirthrightItem)
                .where(BirthrightItem.run == input.run, col(BirthrightItem.seq) > after)
                .order_by(col(BirthrightItem.seq))
                .limit(input.limit)
            ).all()
            result = BirthrightBatchResult(last_seq=None, more=len(items) == input.limit)
            targets = _Targets(self._connectors)
            ledger_only = {item.role for item in items if targets.records_only(session, item.role)}
        pending = [item for item in items if not item.done]
        start = 0
        while start < len(pending):
            # Roles whose grant is the ledger row itself share a transaction (nothing outside can be
            # called twice); every other item gets its own, so a killed worker repeats at most one call.
            end = start + 1
            while end < len(pending) and end - start < LEDGER_CHUNK and pending[start].role in ledger_only:
                if pending[end].role not in ledger_only:
                    break
                end += 1
            chunk = pending[start:end]
            if len(chunk) > 1 and self._apply_together(chunk, targets):
                result.applied += len(chunk)
            else:
                for item in chunk:
                    if self._apply(item, targets):
                        result.applied += 1
                    else:
                        result.failed += 1
            start = end
            activity.heartbeat(chunk[-1].seq)
        if items:
            result.last_seq = items[-1].seq
        return result

    def _apply_together(self, items: list[BirthrightItem], targets: _Targets) -> bool:
        """Apply ledger-only items in one transaction; False (nothing kept) if any of them cannot be."""
        try:
            with session_scope(self._db_url) as session:
                events: list[AuditEntry] = []
                for item in items:
                    events += self._apply_in(session, item, targets)
                append_audit(session, events)
            return True
        except (ConnectorError, _Refused):
            return False  # each alone, so the one at fault is recorded as failed

    def _apply(self, item: BirthrightItem, targets: _Targets) -> bool:
        """Apply one item: claim, call the target with no transaction open, record; False if it was recorded
        as failed."""
        try:
            with session_scope(self._db_url) as session:
                claimed = self._claim(session, item, targets)
            if claimed is not None:
                _call_target(item, claimed)
                with session_scope(self._db_url) as session:
                    _record(session, item, claimed)
            return True
        except ConnectorError as error:
            if error.retryable and activity.info().attempt < names.BIRTHRIGHT_APPLY_ATTEMPTS:
                raise as_activity_error(error) from error
            reason = str(error)
        except _Refused as error:
            reason = str(error)
        except Exception as error:
            # Anything else (a bad account template, an unclassified driver error): retried, then recorded
            # against this item alone, so one broken role does not hold up everyone else's access.
            if activity.info().attempt < names.BIRTHRIGHT_APPLY_ATTEMPTS:
                raise
            reason = f"unexpected error: {type(error).__name__}: {error}"
        self._failed(item, reason)
        return False

    def _apply_in(self, session: Session, item: BirthrightItem, targets: _Targets) -> list[AuditEntry]:
        """Apply one item of a ledger-only role in the caller's transaction (its "target" is this ledger, so
        nothing outside is called) and mark it done; returns its audit events (none: already written)."""
        claimed = self._claim(session, item, targets)
        if claimed is not None:
            _call_target(item, claimed)
            _record(session, item, claimed)
        return []

    def _claim(self, session: Session, item: BirthrightItem, targets: _Targets) -> _Claimed | None:
        """Claim the item's grants or revokes in the caller's transaction; None when no target call is due
        (the item is then done, recorded here)."""
        fresh = session.get(BirthrightItem, item.id, with_for_update=True)
        if fresh is None or fresh.done:
            return None  # an earlier attempt got here first
        resolved = targets.resolve(session, item.role)
        # Discovery holds this exclusively while it compares the target with the ledger.
        lock(session, "integration", resolved.integration, shared=True)
        if item.action == "add":
            claimed = _Claimed(resolved, _claim_add(session, item, resolved), [])
        elif item.action == "remove":
            claimed = _claim_remove(session, item, resolved)
        else:
            append_audit(session, _relabel(session, item))
            claimed = _Claimed(resolved, [], [])
        if claimed.calls:
            return claimed
        _record(session, item, claimed)
        return None

    def _failed(self, item: BirthrightItem, reason: str) -> None:
        with session_scope(self._db_url) as session:
            fresh = session.get(BirthrightItem, item.id)
            if fresh is None or fresh.done:
                return
            fresh.done = True
            fresh.error = reason
            session.add(fresh)
            if item.action == "add":
                # The grant it claimed is not made: end the claim, so the next sync plans it again. A revoke
                # claimed by a failed ``remove`` stays ``revoking`` (still active): the next sync retries it.
                now = datetime.now(UTC)
                for grant in _birthright(session, item.user_email, item.role):
                    if grant.phase == PROVISIONING:
                        lock(session, grant.account, grant.role)
                        end(session, grant, now)
            verb = {"add": "grant", "remove": "revoke"}.get(item.action, "relabel")
            append_audit(
                session,
                [
                    AuditEntry(
                        actor=ACTOR,
                        action="birthright.failed",
                        target=item.role,
                        reason=f"could not {verb} it under birthright policy {item.policy!r}: {reason}; "
                        "the next sync tries again",
                        details={"user": item.user_email, "policy": item.policy, "action": item.action},
                    )
                ],
            )

    @activity.defn(name=names.FINISH_BIRTHRIGHT_SYNC)
    def finish_birthright_sync(self, input: BirthrightFinishInput) -> BirthrightSyncResult:
        """Record how the run went on the ``birthright-sync`` sync state, and audit it."""
        result = BirthrightSyncResult(run=input.run, error=input.error)
        with session_scope(self._db_url) as session:
            if input.run is not None:
                counts = session.execute(
                    sa_select(col(BirthrightItem.action), col(BirthrightItem.error).is_(None), func.count())
                    .where(col(BirthrightItem.run) == input.run, col(BirthrightItem.done).is_(True))
                    .group_by(col(BirthrightItem.action), col(BirthrightItem.error).is_(None))
                )
                for action, ok, count in counts:
                    if not ok:
                        result.failed += count
                    elif action == "add":
                        result.added += count
                    elif action == "remove":
                        result.removed += count
                    else:
                        result.relabelled += count
            now = datetime.now(UTC)
            state = session.get(SyncState, names.BIRTHRIGHT_SYNC) or SyncState(
                name=names.BIRTHRIGHT_SYNC, started_at=now
            )
            state.finished_at = now
            state.error = input.error
            outcome = result.model_dump(mode="json", exclude={"run", "error"})
            state.summary = {**state.summary, **outcome}
            session.add(state)
            append_audit(
                session,
                [
                    AuditEntry(
                        actor=ACTOR,
                        action="birthright_sync.failed" if input.error else "birthright_sync.completed",
                        target=names.BIRTHRIGHT_SYNC,
                        reason=input.error or "",
                        details={"run": input.run, **outcome},
                        at=now,
                    )
                ],
            )
        return result


def _birthright(session: Session, user: str, role: str) -> list[Grant]:
    return list(
        session.exec(
            select(Grant).where(
                Grant.path == "birthright", Grant.user_email == user, Grant.role == role, col(Grant.active).is_(True)
            )
        )
    )


def _claim_add(session: Session, item: BirthrightItem, resolved: _Resolved) -> list[tuple[int, str]]:
    """Claim the grant of an ``add``: the (grant id, account) the target must grant, or none."""
    user = session.exec(select(User).where(User.email == item.user_email)).first()
    if user is None or not user.active:
        return []  # left since the plan was made: the next plan removes, not adds
    if not _still_granted(session, user, item):
        return []  # the policy or the user's groups changed since the plan: the run that change started decides
    account = resolved.connector.account_for(item.user_email)
    lock(session, account, item.role)
    existing = _birthright(session, item.user_email, item.role)
    claimed = [g for g in existing if g.phase == PROVISIONING]
    if claimed:  # an earlier attempt claimed it and may not have reached the target: call again
        return [(claimed[0].id, claimed[0].account)] if claimed[0].id is not None else []
    if existing:  # already granted (a concurrent attempt): at most bring the policy name up to date
        for grant in existing:
            grant.policy = item.policy
            session.add(grant)
        return []
    if revoke_in_flight(session, account, item.role):
        # That revoke must land before this grant, or it would take this grant's access away.
        raise RetryableError(f"{account} is being revoked from {item.role} in the target; granting once that is done")
    now = datetime.now(UTC)
    grant = Grant(
        account=account,
        role=item.role,
        user_email=item.user_email,
        path="birthright",
        policy=item.policy,
        granted_at=now,
        expires_at=None,
        phase=PROVISIONING,
        phase_at=now,
    )
    session.add(grant)
    session.flush()
    assert grant.id is not None
    # Granted in the target even when another grant covers it: granting is idempotent, and that other
    # grant's access may have been removed by hand (discovery ends only the grants it can restore).
    return [(grant.id, account)]


def _claim_remove(session: Session, item: BirthrightItem, resolved: _Resolved) -> _Claimed:
    """Claim the revokes of a ``remove``: those of the last grant of their account go to the target; the
    others end here, another grant still covering their account."""
    accounts = sorted({g.account for g in _birthright(session, item.user_email, item.role)})
    for account in accounts:
        lock(session, account, item.role)
    now = datetime.now(UTC)
    claimed = _Claimed(resolved, [], [])
    for grant in _birthright(session, item.user_email, item.role):  # again, under the locks
        assert grant.id is not None
        if claim_revoke(session, grant, now):
            claimed.calls.append((grant.id, grant.account))
        else:
            claimed.covered.append((grant.id, grant.account))
    session.flush()
    return claimed


def _call_target(item: BirthrightItem, claimed: _Claimed) -> None:
    """The target's calls of a claimed item, each account once; no transaction is open (but a ledger-only one)."""
    connector, target = claimed.resolved.connector, claimed.resolved.target
    for account in sorted({account for _, account in claimed.calls}):
        if item.action == "add":
            connector.grant(account, target, None)
        else:
            connector.revoke(account, target)


def _record(session: Session, item: BirthrightItem, claimed: _Claimed) -> None:
    """Record a claimed item's outcome and mark it done (a second recording of the same item does nothing)."""
    fresh = session.get(BirthrightItem, item.id, with_for_update=True)
    if fresh is None or fresh.done:
        return
    now = datetime.now(UTC)
    events: list[AuditEntry] = []
    if item.action == "add":
        for grant_id, account in claimed.calls:
            lock(session, account, item.role)
            grant = session.get(Grant, grant_id)
            if grant is None or not grant.active:
                continue
            grant.phase = HELD
            grant.phase_at = now
            session.add(grant)
            reason = f"birthright policy {item.policy!r}"
            if active_grants(session, account, item.role, besides_grant=grant_id):
                reason += "; another active grant already gave this access"
            details = {"user": item.user_email, "account": account, "policy": item.policy, "grant_id": grant_id}
            events.append(
                AuditEntry(
                    actor=ACTOR, action="birthright.granted", target=item.role, reason=reason, details=details, at=now
                )
            )
    elif item.action == "remove":
        why = _why_removed(session, item)
        for grant_id, account in claimed.calls:
            lock(session, account, item.role)
            grant = session.get(Grant, grant_id)
            if grant is not None and grant.active:
                end(session, grant, now)
        revoked = sorted({a for _, a in claimed.calls})
        covered = sorted({a for _, a in claimed.covered} - set(revoked))
        for account, still_held in [(a, False) for a in revoked] + [(a, True) for a in covered]:
            reason = f"birthright policy {item.policy!r} no longer grants it: {why}"
            if still_held:
                reason += "; another active grant still covers the account, so access stays"
            details = {"user": item.user_email, "account": account, "policy": item.policy, "still_held": still_held}
            events.append(
                AuditEntry(
                    actor=ACTOR, action="birthright.revoked", target=item.role, reason=reason, details=details, at=now
                )
            )
    fresh.done = True
    session.add(fresh)
    append_audit(session, events)


def _still_granted(session: Session, user: User, item: BirthrightItem) -> bool:
    """Whether the item's policy still grants its role to a group the user is in (it may have changed mid-run)."""
    policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == item.policy)).first()
    if policy is None or item.role not in policy.roles:
        return False
    # By the groups the policy's references name, never a namesake of another source.
    held = set(session.exec(select(Membership.group_id).where(Membership.user_id == user.id)))
    return not held.isdisjoint(group_refs.resolve(session, policy.groups).values())


def _why_removed(session: Session, item: BirthrightItem) -> str:
    user = session.exec(select(User).where(User.email == item.user_email)).first()
    if user is None or not user.active:
        return "the user is no longer active"
    policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == item.policy)).first()
    if policy is None:
        return "the policy was deleted"
    return "the user is no longer in a group of a policy granting the role, or the policy changed"


def _relabel(session: Session, item: BirthrightItem) -> list[AuditEntry]:
    events: list[AuditEntry] = []
    for grant in _birthright(session, item.user_email, item.role):
        if grant.policy == item.policy:
            continue
        events.append(
            AuditEntry(
                actor=ACTOR,
                action="birthright.relabelled",
                target=item.role,
                reason=f"birthright policy {item.policy!r} now accounts for it (was {grant.policy!r}); access stays",
                details={"user": item.user_email, "account": grant.account, "policy": item.policy, "was": grant.policy},
            )
        )
        grant.policy = item.policy
        session.add(grant)
    return events

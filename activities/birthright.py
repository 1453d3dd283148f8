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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity

from access import names
from access.connectors import ConnectorError
from access.syncs import (
    BirthrightBatchInput,
    BirthrightBatchResult,
    BirthrightFinishInput,
    BirthrightPlanned,
    BirthrightSyncResult,
    SyncInput,
)
from access.types import AuditEntry
from activities import metrics
from activities.birthright_items import ACTOR, BatchTargets, Refused, birthright_grants, call_target, claim, record
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.targets import as_activity_error
from store import catalog
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.ledger import PROVISIONING, end
from store.tables import BirthrightItem, SyncState

INSERT_CHUNK = 5000
LEDGER_CHUNK = 100
"""Items of ledger-only roles applied in one transaction."""


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
            targets = BatchTargets(self._connectors)
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

    def _apply_together(self, items: list[BirthrightItem], targets: BatchTargets) -> bool:
        """Apply ledger-only items in one transaction; False (nothing kept) if any of them cannot be."""
        try:
            with session_scope(self._db_url) as session:
                events: list[AuditEntry] = []
                for item in items:
                    events += self._apply_in(session, item, targets)
                append_audit(session, events)
            return True
        except (ConnectorError, Refused):
            return False  # each alone, so the one at fault is recorded as failed

    def _apply(self, item: BirthrightItem, targets: BatchTargets) -> bool:
        """Apply one item: claim, call the target with no transaction open, record; False if it was recorded
        as failed."""
        try:
            with session_scope(self._db_url) as session:
                claimed = claim(session, item, targets)
            if claimed is not None:
                call_target(item, claimed)
                with session_scope(self._db_url) as session:
                    record(session, item, claimed)
            return True
        except ConnectorError as error:
            if error.retryable and activity.info().attempt < names.BIRTHRIGHT_APPLY_ATTEMPTS:
                raise as_activity_error(error) from error
            reason = str(error)
        except Refused as error:
            reason = str(error)
        except Exception as error:
            # Anything else (a bad account template, an unclassified driver error): retried, then recorded
            # against this item alone, so one broken role does not hold up everyone else's access.
            if activity.info().attempt < names.BIRTHRIGHT_APPLY_ATTEMPTS:
                raise
            reason = f"unexpected error: {type(error).__name__}: {error}"
        self._failed(item, reason)
        return False

    def _apply_in(self, session: Session, item: BirthrightItem, targets: BatchTargets) -> list[AuditEntry]:
        """Apply one item of a ledger-only role in the caller's transaction (its "target" is this ledger, so
        nothing outside is called) and mark it done; returns its audit events (none: already written)."""
        claimed = claim(session, item, targets)
        if claimed is not None:
            call_target(item, claimed)
            record(session, item, claimed)
        return []

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
                for grant in birthright_grants(session, item.user_email, item.role):
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
            began = state.started_at  # when the run was planned
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
        if input.error is None:
            handled = result.added + result.removed + result.relabelled + result.failed
            metrics.sync_finished("birthright", began, handled)
        return result

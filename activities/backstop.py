"""Activities of the expiry backstop: revoke the JIT grants past their end that their run will not.

It finds them, and revokes them by their ledger row (Invariant 7: no grant's end depends on one
workflow run).

A run that is going revokes its own grant, so the backstop leaves it alone unless it still says
``active`` a grace after the grant's end (stuck: a workflow task that keeps failing, say). A run that
is gone (terminated at Temporal's history limit, failed, deleted) never will: the backstop revokes in
the target through the connector, counting overlapping grants like every revoke (``store.ledger``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import col, or_, select
from temporalio import activity

from access import names
from access.connectors import ConnectorError
from access.durations import format_duration
from access.grants import BackstopResult, FindOverdueInput, GrantPath, LedgerRevokeResult, OverdueFound, OverdueGrant
from access.requests import RequestState, RequestStatus
from access.types import AuditEntry
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.grants import Ending, revoke_grant_by_id
from activities.runs import request_run
from store.approval_inbox import keep_inbox
from store.audit_log import append_audit
from store.db import session_scope
from store.ledger import HELD, IN_FLIGHT
from store.tables import AccessRequest, AuditEvent, Grant, SyncState

ACTOR = "lapse"
FAILING = "grant.backstop_revoke_failing"
MAX_REASON = 500


class BackstopActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.find_overdue_grants, self.revoke_overdue_grant, self.finish_backstop]

    @activity.defn(name=names.FIND_OVERDUE_GRANTS)
    async def find_overdue_grants(self, input: FindOverdueInput) -> OverdueFound:
        """Up to ``limit`` JIT grants after ``after_id`` past their end plus the grace (or stuck that long mid-
        grant or mid-revoke), and of those the ones whose request's run will not revoke them."""
        now = datetime.now(UTC)
        rows = await asyncio.to_thread(self._candidates, input, now - input.grace)
        found = OverdueFound(last_id=rows[-1].id if rows else None, more=len(rows) == input.limit)
        client = activity.client()
        grace = format_duration(input.grace)
        for row in rows:
            assert row.id is not None and row.request_id is not None
            activity.heartbeat(row.id)
            run = await request_run(client, row.request_id)
            overdue = row.expires_at is not None and row.expires_at <= now - input.grace
            if run.running:
                # Going and not revoking it (still "active") a grace after its end: stuck. Anything else it does
                # itself (a revoke that keeps failing shows as "revoking" and is retried by the run).
                if not (overdue and run.state == RequestState.ACTIVE.value and row.phase == HELD):
                    continue
                reason = f"it is {grace} past its end and {run.description} without revoking it"
            elif overdue:
                reason = f"it is past its end and {run.description}"
            else:
                reason = f"it has been {row.phase} for over {grace} and {run.description}"
            found.grants.append(OverdueGrant(grant_id=row.id, request_id=row.request_id, reason=reason))
        return found

    def _candidates(self, input: FindOverdueInput, cutoff: datetime) -> list[Grant]:
        with session_scope(self._db_url, write=False) as session:
            query = (
                select(Grant)
                .where(
                    col(Grant.active).is_(True),
                    Grant.path == GrantPath.JIT,
                    col(Grant.request_id).is_not(None),
                    col(Grant.id) > input.after_id,
                    or_(
                        col(Grant.expires_at) <= cutoff,
                        col(Grant.phase).in_(IN_FLIGHT) & (col(Grant.phase_at) <= cutoff),
                    ),
                )
                .order_by(col(Grant.id))
                .limit(input.limit)
            )
            return list(session.exec(query))

    @activity.defn(name=names.REVOKE_OVERDUE_GRANT)
    def revoke_overdue_grant(self, input: OverdueGrant) -> LedgerRevokeResult:
        """Revoke one grant the find step chose, audited as ``grant.revoked_by_backstop``; its request shows
        it ended. A failure is made visible (once, in the audit log, and on the request) and retried."""
        with session_scope(self._db_url, write=False) as session:
            grant = session.get(Grant, input.grant_id)
            past_end = grant is not None and grant.expires_at is not None and grant.expires_at <= datetime.now(UTC)
        ending = Ending(
            actor=ACTOR,
            action="grant.revoked_by_backstop",
            reason=f"the expiry backstop revoked it: {input.reason}",
            request_state=RequestState.EXPIRED if past_end else RequestState.REVOKED,
            end_reason=f"revoked by the expiry backstop: {input.reason}",
        )

        def failing(grant: Grant, error: ConnectorError) -> None:
            self._failing(input, str(error)[:MAX_REASON])

        return revoke_grant_by_id(self._db_url, self._connectors, input.grant_id, ending, on_failure=failing)

    def _failing(self, input: OverdueGrant, reason: str) -> None:
        """Show a backstop revoke that fails: on the request (``revoking``, with the error) and, the first
        time, in the audit log. The next backstop run tries again."""
        target = names.request_workflow_id(input.request_id)
        with session_scope(self._db_url) as session:
            row = session.get(AccessRequest, input.request_id)
            if row is not None:
                with contextlib.suppress(ValidationError):  # a status it cannot read keeps its state
                    status = RequestStatus.model_validate(row.status)
                    status.revoke_error = reason
                    if not status.state.ended:
                        status.state = RequestState.REVOKING
                        row.state = status.state.value
                    row.status = status.model_dump(mode="json")
                    session.add(row)
                    keep_inbox(session, input.request_id, status)  # a grant being revoked is extended by nobody
            seen = session.exec(
                select(AuditEvent.id).where(AuditEvent.target == target, AuditEvent.action == FAILING).limit(1)
            ).first()
            if seen is None:
                entry = AuditEntry(
                    actor=ACTOR,
                    action=FAILING,
                    target=target,
                    reason=f"the expiry backstop cannot revoke it ({input.reason}): {reason}; it tries again",
                    details={"grant_id": input.grant_id},
                )
                append_audit(session, [entry])

    @activity.defn(name=names.FINISH_BACKSTOP)
    def finish_backstop(self, input: BackstopResult) -> None:
        """Record how the run went on the ``expiry-backstop`` sync state (what it revoked, what keeps failing)."""
        with session_scope(self._db_url) as session:
            now = datetime.now(UTC)
            state = session.get(SyncState, names.EXPIRY_BACKSTOP) or SyncState(name=names.EXPIRY_BACKSTOP)
            state.finished_at = now
            state.error = input.error
            state.summary = input.model_dump(mode="json", exclude={"error"})
            session.add(state)

"""Ending a grant by its ledger row, outside its request's run: an admin's revoke, the backstop's, a take-back.

The admin's revoke from the permissions table is ``GrantRevokeWorkflow``'s activity; the expiry
backstop and a failed grant taken back share its ``revoke_grant_by_id``.

Claim, call, record (``store.ledger``), each step idempotent; the target is revoked only when no other
active grant covers the account and role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names
from access.connectors import ConnectorError
from access.grants import GrantPath, LedgerRevokeInput, LedgerRevokeResult
from access.requests import RequestState, RequestStatus
from access.types import AuditEntry
from activities import metrics
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.liveness import heartbeating_async
from activities.runs import request_run
from activities.targets import as_activity_error, hold_integration, resolve_target
from store.approval_inbox import keep_inbox
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.ledger import active_grants, claim_revoke, end
from store.tables import AccessRequest, Credential, Grant


class GrantActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.revoke_ledger_grant]

    @activity.defn(name=names.REVOKE_LEDGER_GRANT)
    async def revoke_ledger_grant(self, input: LedgerRevokeInput) -> LedgerRevokeResult:
        """An admin ends a grant from the permissions table: a birthright or external one, or a JIT one whose
        request's run is gone (a run that is still going ends its grant itself, so its history stays true).

        A birthright grant ended so is granted again by the next birthright sync while its policy applies.
        """
        async with heartbeating_async():  # the workflow gives it a heartbeat timeout: a lost attempt is seen soon
            return await self._revoke(input)

    async def _revoke(self, input: LedgerRevokeInput) -> LedgerRevokeResult:
        request_id = await asyncio.to_thread(self._request_of, input.grant_id)
        comment = input.comment.strip()
        ending = Ending(actor=input.actor, action="grant.revoked", reason=comment)
        if request_id is not None:
            run = await request_run(activity.client(), request_id)
            if run.running:
                raise ApplicationError(
                    f"grant {input.grant_id} belongs to request {request_id}, whose run is going: "
                    "revoke it through the request",
                    type="RunAlive",
                    non_retryable=True,
                )
            why = f"revoked by an admin while {run.description}"
            ending = Ending(
                actor=input.actor,
                action="grant.revoked",
                reason=f"{comment} ({why})" if comment else why,
                request_state=RequestState.REVOKED,
                end_reason=comment or why,
            )
        return await asyncio.to_thread(revoke_grant_by_id, self._db_url, self._connectors, input.grant_id, ending)

    def _request_of(self, grant_id: int) -> str | None:
        """The request of a JIT grant (None for a birthright or external one); no such grant is final."""
        with session_scope(self._db_url, write=False) as session:
            grant = session.get(Grant, grant_id)
        if grant is None or (grant.path == GrantPath.JIT and grant.request_id is None):
            raise ApplicationError(f"there is no grant {grant_id}", type="NotALedgerGrant", non_retryable=True)
        return grant.request_id if grant.path == GrantPath.JIT else None


@dataclass(frozen=True)
class Ending:
    """Who ends a grant by its ledger row (an admin, the expiry backstop, a failed grant taken back), and how
    it is recorded: an audit event, and for a JIT grant whose run is gone its request row, ended."""

    actor: str
    action: str
    reason: str
    request_state: RequestState | None = None
    """The state its request's row takes (a JIT grant whose run will not record its end); None: untouched."""
    end_reason: str | None = None
    """The request's ``end_reason`` when ``request_state`` is set; default ``reason``."""


def revoke_grant_by_id(
    db_url: str,
    connectors: Mapping[str, ConnectorFactory],
    grant_id: int,
    ending: Ending,
    *,
    on_failure: Callable[[Grant, ConnectorError], None] | None = None,
) -> LedgerRevokeResult:
    """End one ledger row and revoke in the target unless another active grant covers the account and role:
    claim, call, record (``store.ledger``), each step idempotent. ``on_failure`` is told when the target
    refuses, before the activity fails (to make a revoke that keeps failing visible)."""
    with session_scope(db_url) as session:
        grant = session.get(Grant, grant_id)
        if grant is None:
            raise ApplicationError(f"there is no grant {grant_id}", type="NotALedgerGrant", non_retryable=True)
        integration, target, connector = resolve_target(session, grant.role, connectors)
        hold_integration(session, integration.name)
        lock(session, grant.account, grant.role)
        session.refresh(grant)
        if not grant.active:
            return _ledger_result(grant, still_held=active_grants(session, grant.account, grant.role) > 0)
        now = datetime.now(UTC)
        if not claim_revoke(session, grant, now):
            record_ending(session, grant, ending, still_held=True, now=now)
            metrics.grant_ended(integration.name, expires_at=grant.expires_at, began_at=now)
            return _ledger_result(grant, still_held=True)
        began_at = grant.phase_at  # the revoke's first claim
    try:
        connector.revoke(grant.account, target)
    except ConnectorError as error:
        if on_failure is not None:
            on_failure(grant, error)
        raise as_activity_error(error) from error
    with session_scope(db_url) as session:
        lock(session, grant.account, grant.role)
        ended = session.get(Grant, grant_id)
        if ended is not None and ended.active:
            now = datetime.now(UTC)
            end(session, ended, now)
            record_ending(session, ended, ending, still_held=False, now=now)
            metrics.grant_ended(integration.name, expires_at=ended.expires_at, began_at=began_at)
    return _ledger_result(grant, still_held=False)


def _ledger_result(grant: Grant, *, still_held: bool) -> LedgerRevokeResult:
    return LedgerRevokeResult(
        role=grant.role,
        account=grant.account,
        path=grant.path,
        still_held=still_held,
        returns_on_sync=grant.path == GrantPath.BIRTHRIGHT,
    )


def record_ending(session: Session, grant: Grant, ending: Ending, *, still_held: bool, now: datetime) -> None:
    """Audit a grant's end, and end its request's row where the run will not (inside the caller's transaction)."""
    reason = ending.reason
    if grant.path == GrantPath.BIRTHRIGHT:
        reason += f" (birthright policy {grant.policy!r}: the next birthright sync grants it again)"
    details: dict[str, Any] = {
        "account": grant.account,
        "user": grant.user_email,
        "path": grant.path,
        "grant_id": grant.id,
        "still_held": still_held,
    }
    audit_target = grant.role
    if grant.request_id is not None:
        audit_target = names.request_workflow_id(grant.request_id)
        details["role"] = grant.role
        drop_credentials(session, grant.request_id)
        if ending.request_state is not None:
            _end_request(session, grant.request_id, ending, now)
    entry = AuditEntry(
        actor=ending.actor, action=ending.action, target=audit_target, reason=reason.strip(), details=details, at=now
    )
    append_audit(session, [entry])


def _end_request(session: Session, request_id: str, ending: Ending, now: datetime) -> None:
    """Show a request as ended whose run is gone (it will never record its end itself)."""
    row = session.get(AccessRequest, request_id)
    if row is None or ending.request_state is None:
        return
    state = ending.request_state
    try:
        status = RequestStatus.model_validate(row.status)
    except ValidationError:
        status = None
    if status is not None and status.state.ended:
        return
    row.state = state.value
    row.ended_at = now
    if status is not None:
        status.state = state
        status.ended_at = now
        status.ended_by = ending.actor
        status.end_reason = ending.end_reason or ending.reason
        status.revoke_error = None
        row.status = status.model_dump(mode="json")
    session.add(row)
    keep_inbox(session, request_id, status)  # an ended request awaits nobody's decision


def drop_credentials(session: Session, request_id: str) -> None:
    sealed = session.get(Credential, request_id)
    if sealed is not None:  # never shown, and of no use now
        session.delete(sealed)

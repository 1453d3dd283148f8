"""Grants: what is held and until when, and ending one early.

A JIT grant ends through its request while its run is going; any other, or one whose run is gone,
through a revoke workflow over its ledger row.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import col, select
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from access import names
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.grants import GrantPath, LedgerRevokeInput, LedgerRevokeResult
from access.requests import EndInput, RequestStatus
from activities.runs import request_run
from starter.services.audit import refused
from starter.services.authorization import require_admin
from starter.services.recent_sign_in import SignIn
from starter.services.requests import require_recent_end, send_update, stored_status
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, User
from workflows.access_request import AccessRequestWorkflow
from workflows.grants import GrantRevokeWorkflow


class GrantOut(BaseModel):
    id: int
    """For ``POST /api/grants/{id}/revoke``."""
    role: str
    account: str
    user: str | None
    """``null``: the account matches no Lapse user (unlinked)."""
    path: str
    """``jit`` (a request), ``birthright`` (a policy) or ``external`` (found in the target)."""
    request_id: str | None
    policy: str | None = None
    """The birthright policy a ``birthright`` grant was made under."""
    returns_on_sync: bool = False
    """A birthright grant: revoking it by hand is temporary, the next birthright sync grants it again
    while the policy applies. Change the policy (``/api/birthright/policies``) to take it away for good."""
    granted_at: datetime
    expires_at: datetime | None
    """``null`` for standing access."""

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        assert grant.id is not None
        return cls(
            id=grant.id,
            role=grant.role,
            account=grant.account,
            user=grant.user_email,
            path=grant.path,
            request_id=grant.request_id,
            policy=grant.policy,
            returns_on_sync=grant.path == GrantPath.BIRTHRIGHT,
            granted_at=grant.granted_at,
            expires_at=grant.expires_at,
        )


class RevokedOut(BaseModel):
    grant: GrantOut
    still_held: bool
    """Another active grant still covers the account and role, so access stays."""
    returns_on_sync: bool
    """A birthright grant: the next birthright sync grants it again while its policy applies."""
    request: RequestStatus | None = None
    """For a JIT grant: its request, which the revoke ended."""


def list_grants(settings: Settings, user: User, *, everyone: bool) -> list[GrantOut]:
    """The caller's active grants (everyone's for an admin who asks), soonest expiry first."""
    query = select(Grant).where(col(Grant.active).is_(True))
    if everyone:
        require_admin(user)
    else:
        query = query.where(Grant.user_email == user.email)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(query.order_by(col(Grant.expires_at).nulls_last(), col(Grant.role))).all()
    return [GrantOut.of(g) for g in rows]


async def revoke_grant(
    client: Client, settings: Settings, admin: User, grant_id: int, *, comment: str, sign_in: SignIn
) -> RevokedOut:
    """An admin ends a grant from the permissions table: a JIT grant through its request while its run is
    going (so that history stays true); a birthright or external one, or a JIT one whose run is gone
    (terminated at Temporal's history limit, say), through a revoke workflow over its ledger row.

    Ending someone's JIT grant whose request's workflow says ``reauthenticate_within`` needs a sign-in that
    recent (``sign_in``, as ``requests.require_recent_end`` judges it)."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        grant = session.get(Grant, grant_id)
    if grant is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no grant {grant_id}", field="grant_id")
    if not grant.active:
        raise Refusal(RefusalKind.CONFLICT, f"grant {grant_id} already ended at {grant.ended_at}", field="grant_id")
    request_id = grant.request_id if grant.path == GrantPath.JIT else None
    if request_id is not None:
        await asyncio.to_thread(require_recent_end, settings, sign_in, admin, request_id, "grant.revoke")
    if request_id is not None and (await request_run(client, request_id)).running:
        status = await revoke_request_grant(client, settings, admin, request_id, comment=comment, sign_in=sign_in)
        return RevokedOut(grant=GrantOut.of(grant), still_held=False, returns_on_sync=False, request=status)
    result = await _revoke_ledger_grant(client, settings, admin, grant_id, comment=comment)
    with session_scope(settings.db_url, write=False) as session:
        ended = session.get(Grant, grant_id)
    assert ended is not None
    return RevokedOut(
        grant=GrantOut.of(ended),
        still_held=result.still_held,
        returns_on_sync=result.returns_on_sync,
        request=stored_status(settings, request_id) if request_id is not None else None,
    )


async def revoke_request_grant(
    client: Client, settings: Settings, actor: User, request_id: str, *, comment: str, sign_in: SignIn
) -> RequestStatus:
    """End a request's grant now: its requester gives it back, or an admin takes it away (under a workflow that
    says ``reauthenticate_within``, with a sign-in that recent: ``requests.require_recent_end``)."""
    await asyncio.to_thread(require_recent_end, settings, sign_in, actor, request_id, "grant.revoke")
    orphan = await _grant_without_run(client, settings, request_id)
    if orphan is None:
        arg = EndInput(actor=actor.email, is_admin=actor.is_admin, comment=comment, request_id=request_id)
        return await send_update(
            client, settings, actor.email, request_id, AccessRequestWorkflow.revoke, arg, "grant.revoke"
        )
    # The run is gone (terminated at Temporal's history limit, say): revoke by the ledger row.
    known = await asyncio.to_thread(stored_status, settings, request_id)
    if not actor.is_admin and (known is None or actor.email != known.requester):
        refusal = Refusal(RefusalKind.FORBIDDEN, "only the requester or an admin can revoke a grant")
        target = names.request_workflow_id(request_id)
        raise await asyncio.to_thread(refused, settings, actor.email, "grant.revoke", target, refusal)
    await _revoke_ledger_grant(client, settings, actor, orphan, comment=comment)
    status = await asyncio.to_thread(stored_status, settings, request_id)
    assert status is not None
    return status


async def _grant_without_run(client: Client, settings: Settings, request_id: str) -> int | None:
    """The id of the request's active grant when its run is no longer going, else None."""

    def active_grant() -> int | None:
        with session_scope(settings.db_url, write=False) as session:
            grant = session.exec(
                select(Grant).where(Grant.request_id == request_id, col(Grant.active).is_(True))
            ).first()
            return grant.id if grant is not None else None

    grant_id = await asyncio.to_thread(active_grant)
    if grant_id is None or (await request_run(client, request_id)).running:
        return None
    return grant_id


async def _revoke_ledger_grant(
    client: Client, settings: Settings, actor: User, grant_id: int, *, comment: str
) -> LedgerRevokeResult:
    """End a grant by its ledger row through its revoke workflow; wait ``submit_timeout`` for it."""
    handle = await client.start_workflow(
        GrantRevokeWorkflow.run,
        LedgerRevokeInput(grant_id=grant_id, actor=actor.email, comment=comment),
        id=names.grant_revoke_id(grant_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    try:
        return await asyncio.wait_for(handle.result(), timeout=settings.submit_timeout.total_seconds())
    except TimeoutError:
        raise Refusal(
            RefusalKind.UNAVAILABLE,
            f"the revoke of grant {grant_id} has not finished within {format_duration(settings.submit_timeout)}: "
            f"no worker may be running, or the target keeps failing. It goes on until it succeeds "
            f"(workflow {names.grant_revoke_id(grant_id)}).",
        ) from None
    except WorkflowFailureError as error:
        cause = error.cause.cause if isinstance(error.cause, ActivityError) else error.cause
        if isinstance(cause, ApplicationError) and cause.type == "RunAlive":
            raise Refusal(
                RefusalKind.CONFLICT, f"{cause.message} (POST /api/requests/{{id}}/revoke)", field="grant_id"
            ) from None
        if isinstance(cause, ApplicationError) and cause.type == "NotALedgerGrant":
            raise Refusal(RefusalKind.NOT_FOUND, cause.message, field="grant_id") from None
        raise

"""Starting request workflows and sending them decisions, on behalf of an authenticated caller.

The policy decides (``access.policy``); this module only gathers its inputs, starts the
workflow or sends it an update, and turns refusals into problems the API can return.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from sqlmodel import col, select
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.durations import format_duration
from access.grants import LedgerRevokeInput, LedgerRevokeResult
from access.policy import (
    InvalidRequest,
    NoEligibleApprovers,
    NotRequestable,
    PolicyError,
    evaluate_policy,
    resolve_approvers,
)
from access.requests import (
    AccessRequestInput,
    CredentialsShown,
    DecisionInput,
    EndInput,
    ExtendInput,
    RequestAck,
    RequestState,
    RequestStatus,
)
from access.types import AuditEntry, RequestPlan
from activities.requests import request_run
from starter.api.problems import Problem
from store import catalog
from store.credentials import credential_cipher
from store.db import append_audit, audit_refusal, session_scope
from store.settings import Settings
from store.tables import AccessRequest, Credential, Grant, User
from workflows.access_request import AccessRequestWorkflow
from workflows.grants import GrantRevokeWorkflow

_POLICY_STATUS = {NotRequestable: 403, InvalidRequest: 422, NoEligibleApprovers: 422}
_REFUSAL_STATUS = {"Forbidden": 403, "Conflict": 409, "Invalid": 422}


def new_request_id() -> str:
    """Short, unguessable, readable in a workflow id: ``access-request-k3v9q2m7xw``."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _plan(settings: Settings, requester: User, role_path: str, duration: timedelta, justification: str) -> RequestPlan:
    with session_scope(settings.db_url, write=False) as session:
        role = catalog.find_role(session, role_path)
        if role is None:
            raise Problem(404, f"there is no role {role_path!r}; see GET /api/catalog", field="role")
        if role.missing:
            raise Problem(
                409,
                f"role {role.path} was not found in its target at the last discovery; "
                "it can be requested again once it is back",
                field="role",
            )
        approval = catalog.policy_for(session, role)
        context = catalog.policy_context(session, requester, role, approval)
    try:
        return evaluate_policy(approval, context, duration=duration, justification=justification)
    except PolicyError as error:
        raise Problem(_POLICY_STATUS[type(error)], error.detail, field=error.field) from error


async def create_request(
    client: Client, settings: Settings, requester: User, *, role: str, duration: timedelta, justification: str
) -> RequestStatus:
    """Validate a request against its policy and start its workflow; nothing starts if it is refused.

    When more requests are being started than the workers record, a new one is turned away at once
    (503 with ``Retry-After``) rather than held: nothing is started for it.
    """
    async with _admitted(settings):
        return await _create_request(
            client, settings, requester, role=role, duration=duration, justification=justification
        )


async def _create_request(
    client: Client, settings: Settings, requester: User, *, role: str, duration: timedelta, justification: str
) -> RequestStatus:
    try:
        # The app DB is read in a thread: the API's event loop serves every other caller meanwhile.
        plan = await asyncio.to_thread(_plan, settings, requester, role, duration, justification)
    except Problem as problem:
        raise await asyncio.to_thread(refused, settings, requester.email, "request.create", role, problem) from None
    request_id = new_request_id()
    input = AccessRequestInput(
        id=request_id,
        requester=requester.email,
        role=role.strip(),
        duration=duration,
        justification=justification,
        plan=plan,
        approval_timeout=settings.approval_timeout,
        created_at=datetime.now(UTC),
    )
    start = WithStartWorkflowOperation(
        AccessRequestWorkflow.run,
        input,
        id=names.request_workflow_id(request_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        task_timeout=names.REQUEST_TASK_TIMEOUT,
        search_attributes=names.start_search_attributes(requester.email, input.role),
        static_summary=f"{requester.email} → {input.role} for {format_duration(duration)}",
        # No justification here: user metadata is not a workflow payload the codec seals.
        static_details=f"rule {plan.rule!r} of {plan.policy!r}",
    )
    try:
        status: RequestStatus = await client.execute_update_with_start_workflow(
            AccessRequestWorkflow.submit, start_workflow_operation=start, rpc_timeout=settings.submit_timeout
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Problem(
            503,
            f"request {request_id} was started but no Lapse worker recorded it within "
            f"{format_duration(settings.submit_timeout)}; it proceeds once a worker runs",
            id=request_id,
        ) from None
    except RPCError as error:
        # Temporal failed mid-call: the request may have started all the same. Say which, so that a caller
        # who retries does not make a second request.
        raise await _start_failed(client, request_id, error) from None
    return status


async def _start_failed(client: Client, request_id: str, error: RPCError) -> Problem:
    """What to tell a caller whose request start failed with ``error``: started after all, or not."""
    try:
        await client.get_workflow_handle(names.request_workflow_id(request_id)).describe()
    except RPCError as describe_error:
        if describe_error.status is RPCStatusCode.NOT_FOUND:
            return Problem(
                503, f"the workflow service failed ({error.message}): nothing was started, try again", retry_after=2
            )
        return Problem(
            503,
            f"the workflow service failed ({error.message}) and request {request_id} may have started: "
            f"GET /api/requests/{request_id} shows it once it is recorded; check there before asking again",
            id=request_id,
            retry_after=5,
        )
    return Problem(
        503,
        f"request {request_id} was started but the workflow service failed before it was recorded "
        f"({error.message}); it proceeds: GET /api/requests/{request_id}",
        id=request_id,
    )


_ADMISSION: dict[tuple[int, int], asyncio.Semaphore] = {}


@asynccontextmanager
async def _admitted(settings: Settings) -> AsyncIterator[None]:
    """Hold one of ``settings.max_pending_submits`` places for a request being started, or refuse at once.

    Each place waits on a worker to record its request; when all are taken, the workers are behind, and
    a caller is better told to come back than held for ``submit_timeout``.
    """
    key = (id(asyncio.get_running_loop()), settings.max_pending_submits)
    places = _ADMISSION.setdefault(key, asyncio.Semaphore(settings.max_pending_submits))
    try:
        await asyncio.wait_for(places.acquire(), timeout=settings.admission_wait.total_seconds())
    except TimeoutError:
        raise Problem(
            503,
            f"Lapse is starting {settings.max_pending_submits} requests already and its workers are behind; "
            "nothing was started for this one: try again shortly",
            retry_after=2,
        ) from None
    try:
        yield
    finally:
        places.release()


def stored_status(settings: Settings, request_id: str) -> RequestStatus | None:
    with session_scope(settings.db_url, write=False) as session:
        row = session.get(AccessRequest, request_id)
        return RequestStatus.model_validate(row.status) if row else None


async def _update(
    client: Client, settings: Settings, actor: str, request_id: str, update: Any, arg: Any, action: str
) -> RequestStatus:
    """Send an update; a refusal becomes a problem and an audit event (it leaves no history)."""
    known = await asyncio.to_thread(stored_status, settings, request_id)
    if known is None:
        raise Problem(404, f"there is no request {request_id!r}", field="id")
    handle = client.get_workflow_handle(names.request_workflow_id(request_id))
    try:
        # The update answers small (its answer stays in history) once the app DB holds what it did; the
        # whole status is read there, which costs Temporal nothing.
        await handle.execute_update(update, arg, result_type=RequestAck)
        current = await asyncio.to_thread(stored_status, settings, request_id)
        assert current is not None
        return current
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
        kind = cause.type if isinstance(cause, ApplicationError) else None
        status = _REFUSAL_STATUS.get(kind or "", 409)
        details = cause.details if isinstance(cause, ApplicationError) else ()
        field = str(details[0]) if details else None
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        latest = await asyncio.to_thread(stored_status, settings, request_id)
        reason = f"request {request_id} has ended ({(latest or known).state.value})"
        status, field = 409, None
    problem = Problem(status, reason, field=field)
    raise await asyncio.to_thread(refused, settings, actor, action, names.request_workflow_id(request_id), problem)


def refused(settings: Settings, actor: str, action: str, target: str, problem: Problem) -> Problem:
    """Audit a refused attempt (refusals leave no trace in workflow history) and return it.

    Identical repeats within ``settings.audit_refusal_window`` become one event with their count."""
    audit_refusal(settings, AuditEntry(actor=actor, action=f"{action}.refused", target=target, reason=problem.detail))
    return problem


async def decide(
    client: Client, settings: Settings, actor: User, request_id: str, *, approved: bool, comment: str
) -> RequestStatus:
    update = AccessRequestWorkflow.approve if approved else AccessRequestWorkflow.deny
    action = "request.approve" if approved else "request.deny"
    await asyncio.to_thread(_still_eligible, settings, actor, request_id, action)
    decision = DecisionInput(actor=actor.email, comment=comment, request_id=request_id)
    return await _update(client, settings, actor.email, request_id, update, decision, action)


def _still_eligible(settings: Settings, actor: User, request_id: str, action: str) -> None:
    """Refuse a decision from someone the open step named who is no longer eligible today (moved out of
    the group, no longer the manager or an owner): the step's people were resolved when it opened."""
    status = stored_status(settings, request_id)
    step = status.open_step() if status else None
    if status is None or step is None or actor.email not in step.eligible:
        return  # the workflow refuses these itself, saying why
    with session_scope(settings.db_url, write=False) as session:
        requester = catalog.find_user(session, status.requester)
        role = catalog.find_role(session, status.role)
        if requester is None or role is None:
            return
        context = catalog.policy_context(session, requester, role, catalog.policy_for(session, role))
    if actor.email not in resolve_approvers(step.approvers, context):
        target = names.request_workflow_id(request_id)
        problem = Problem(403, f"{actor.email} is no longer an eligible approver for step {step.name!r}")
        raise refused(settings, actor.email, action, target, problem)


async def end(
    client: Client, settings: Settings, actor: User, request_id: str, *, revoke: bool, comment: str
) -> RequestStatus:
    update = AccessRequestWorkflow.revoke if revoke else AccessRequestWorkflow.cancel
    action = "grant.revoke" if revoke else "request.cancel"
    if revoke:
        orphan = await _grant_without_run(client, settings, request_id)
        if orphan is not None:
            # The run is gone (terminated at Temporal's history limit, say): revoke by the ledger row.
            known = await asyncio.to_thread(stored_status, settings, request_id)
            if not actor.is_admin and (known is None or actor.email != known.requester):
                problem = Problem(403, "only the requester or an admin can revoke a grant")
                raise await asyncio.to_thread(
                    refused, settings, actor.email, action, names.request_workflow_id(request_id), problem
                )
            _, _, status = await revoke_grant(client, settings, actor, orphan, comment=comment)
            assert status is not None
            return status
    arg = EndInput(actor=actor.email, is_admin=actor.is_admin, comment=comment, request_id=request_id)
    return await _update(client, settings, actor.email, request_id, update, arg, action)


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


async def extend(
    client: Client, settings: Settings, actor: User, request_id: str, *, duration: timedelta, justification: str
) -> RequestStatus:
    """Ask for more time on an active grant; the policy judges the grant's new total length."""
    arg = await asyncio.to_thread(_judge_extension, settings, actor, request_id, duration, justification)
    return await _update(client, settings, actor.email, request_id, AccessRequestWorkflow.extend, arg, "grant.extend")


def _judge_extension(
    settings: Settings, actor: User, request_id: str, duration: timedelta, justification: str
) -> ExtendInput:
    """The policy's verdict on the grant's new total length, from the stored status; a refusal is audited."""
    status = stored_status(settings, request_id)
    if status is None:
        raise Problem(404, f"there is no request {request_id!r}", field="id")
    target = names.request_workflow_id(request_id)
    try:
        if status.state is not RequestState.ACTIVE or status.granted_at is None or status.expires_at is None:
            raise Problem(409, f"request {request_id} is {status.state.value}: only an active grant can be extended")
        if duration <= timedelta(0):
            raise Problem(422, "the extension must be longer than zero", field="duration")
        total = status.expires_at + duration - status.granted_at
        plan = _plan(settings, actor, status.role, total, justification or status.justification)
    except Problem as problem:
        raise refused(settings, actor.email, "grant.extend", target, problem) from None
    return ExtendInput(
        request_id=request_id,
        actor=actor.email,
        duration=duration,
        justification=justification,
        plan=plan,
        total=total,
    )


def show_credentials(settings: Settings, actor: User, request_id: str) -> CredentialsShown:
    """Hand the requester their grant's one-time login, once: the sealed password is cleared as it is read.

    The audit log records that it was shown (or refused), never the password.
    """
    status = stored_status(settings, request_id)
    if status is None:
        raise Problem(404, f"there is no request {request_id!r}", field="id")
    target = names.request_workflow_id(request_id)
    shown: CredentialsShown | None = None
    with session_scope(settings.db_url) as session:
        row = session.get(Credential, request_id, with_for_update=True)  # one reader at a time on PostgreSQL
        if actor.email != status.requester:
            problem = Problem(403, "only the requester can see the credentials of their grant")
        elif row is None:
            problem = Problem(409, f"request {request_id} is {status.state.value} and has no credentials to show")
        elif row.ciphertext is None:
            problem = Problem(410, f"the credentials of request {request_id} were already shown, at {row.shown_at}")
        elif status.state is not RequestState.ACTIVE:
            problem = Problem(409, f"request {request_id} is {status.state.value}: credentials are shown while active")
        else:
            try:
                password = credential_cipher(settings).decrypt(row.ciphertext.encode()).decode()
            except InvalidToken:
                raise Problem(
                    409, "the credentials were sealed with another key than this API's (LAPSE_SECRET_KEY)"
                ) from None
            row.ciphertext = None
            row.shown_at = datetime.now(UTC)
            session.add(row)
            entry = AuditEntry(
                actor=actor.email, action="credentials.shown", target=target, details={"login": row.username}
            )
            append_audit(session, [entry])
            shown = CredentialsShown(
                username=row.username, password=password, expires_at=status.expires_at, dsn_hint=row.dsn_hint
            )
    if shown is None:
        raise refused(settings, actor.email, "credentials.show", target, problem)
    return shown


async def revoke_grant(
    client: Client, settings: Settings, actor: User, grant_id: int, *, comment: str
) -> tuple[Grant, LedgerRevokeResult | None, RequestStatus | None]:
    """End a grant from the permissions table: a JIT grant through its request while its run is going (so
    that history stays true); a birthright or external one, or a JIT one whose run is gone (terminated at
    Temporal's history limit, say), through a revoke workflow over its ledger row. Returns the grant as it
    ended, and for a JIT grant its request."""
    with session_scope(settings.db_url, write=False) as session:
        grant = session.get(Grant, grant_id)
    if grant is None:
        raise Problem(404, f"there is no grant {grant_id}", field="grant_id")
    if not grant.active:
        raise Problem(409, f"grant {grant_id} already ended at {grant.ended_at}", field="grant_id")
    request_id = grant.request_id if grant.path == "jit" else None
    if request_id is not None and (await request_run(client, request_id)).running:
        status = await end(client, settings, actor, request_id, revoke=True, comment=comment)
        return grant, None, status
    result = await _revoke_ledger_grant(client, settings, actor, grant_id, comment=comment)
    with session_scope(settings.db_url, write=False) as session:
        ended = session.get(Grant, grant_id)
    assert ended is not None
    return ended, result, stored_status(settings, request_id) if request_id is not None else None


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
        raise Problem(
            503,
            f"the revoke of grant {grant_id} has not finished within {format_duration(settings.submit_timeout)}: "
            f"no worker may be running, or the target keeps failing. It goes on until it succeeds "
            f"(workflow {names.grant_revoke_id(grant_id)}).",
        ) from None
    except WorkflowFailureError as error:
        cause = error.cause.cause if isinstance(error.cause, ActivityError) else error.cause
        if isinstance(cause, ApplicationError) and cause.type == "RunAlive":
            raise Problem(409, f"{cause.message} (POST /api/requests/{{id}}/revoke)", field="grant_id") from None
        if isinstance(cause, ApplicationError) and cause.type == "NotALedgerGrant":
            raise Problem(404, cause.message, field="grant_id") from None
        raise

"""Access requests on behalf of an authenticated caller: start one, read them, decide, cancel, extend.

The policy decides (``access.policy``); this module gathers its inputs, starts the workflow or sends
it an update, and audits what it refuses. Ending a grant is ``starter.services.grants``'s.

About 600 lines: the checks an update needs before it is sent (the caller still eligible, a recent enough sign-in
under ``reauthenticate_within``) stay beside the updates they guard, and a start's admission and claim beside it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, tuple_
from sqlmodel import Session, col, select
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError as UpdateTimedOut
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.approval import deciders
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.policy import evaluate_policy, resolve_approvers
from access.requests import (
    AccessRequestInput,
    DecisionInput,
    EndInput,
    ExtendInput,
    ExtensionState,
    RequestAck,
    RequestState,
    RequestStatus,
)
from access.types import RequestPlan
from activities.oncall import on_call_context
from starter.services.audit import refused
from starter.services.authorization import require_request_reader
from starter.services.recent_sign_in import SignIn, require_recent_sign_in, require_recent_to_request
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, ApprovalInbox, Grant, Role, User, UTCDateTime
from workflows.access_request import AccessRequestWorkflow


def new_request_id() -> str:
    """Short, unguessable, readable in a workflow id: ``access-request-k3v9q2m7xw``."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _not_found(request_id: str) -> Refusal:
    return Refusal(RefusalKind.NOT_FOUND, f"there is no request {request_id!r}", field="id")


# --- reading ------------------------------------------------------------------------------


def stored_status(settings: Settings, request_id: str) -> RequestStatus | None:
    """The request's status as its workflow last recorded it in the app DB."""
    with session_scope(settings.db_url, write=False) as session:
        row = session.get(AccessRequest, request_id)
        return RequestStatus.model_validate(row.status) if row else None


def get_request(settings: Settings, user: User, request_id: str) -> RequestStatus:
    """A request's status, for those who may see it, with the end its holder was warned of (the expiring-soon
    scan marks it on the grant, ``store.expiry_warnings``; runs from before the scan kept it in their status)."""
    status = stored_status(settings, request_id)
    if status is None:
        raise _not_found(request_id)
    require_request_reader(user, status)
    if status.expires_at is not None and status.warned_for is None:
        with session_scope(settings.db_url, write=False) as session:
            warned_for = session.exec(select(Grant.warned_for).where(Grant.request_id == request_id)).first()
        status = status.model_copy(update={"warned_for": warned_for})
    return status


def list_requests(settings: Settings, user: User, *, state: RequestState | None, limit: int) -> list[RequestStatus]:
    """The caller's requests, newest first; an admin's list has everyone's."""
    query = select(AccessRequest).order_by(col(AccessRequest.created_at).desc()).limit(limit)
    if not user.is_admin:
        query = query.where(AccessRequest.requester == user.email)
    if state is not None:
        query = query.where(AccessRequest.state == state.value)
    with session_scope(settings.db_url, write=False) as session:
        return [RequestStatus.model_validate(row.status) for row in session.exec(query)]


APPROVALS_PAGE = 100
"""How many requests ``GET /api/approvals`` lists at a time unless asked for fewer or more."""
MAX_APPROVALS_PAGE = 500


@dataclass(frozen=True)
class Awaiting:
    """A page of what the caller can decide now, oldest first."""

    requests: list[RequestStatus]
    next_after: str | None
    """The request to list on ``after`` (the last one this page looked at); None on the last page."""


def awaiting_decision(
    settings: Settings, user: User, *, after: str | None = None, limit: int = APPROVALS_PAGE
) -> Awaiting:
    """Pending requests, and pending extensions of active grants, that the caller can decide now: the
    ``limit`` oldest after request ``after``.

    The approvals inbox (``store.approval_inbox``) says which requests to look at, through an index; each
    one's status then has the last word, by the workflow's own rule."""
    if not 1 <= limit <= MAX_APPROVALS_PAGE:
        raise Refusal(RefusalKind.INVALID, f"limit must be between 1 and {MAX_APPROVALS_PAGE}", field="limit")
    order = (col(ApprovalInbox.created_at), col(ApprovalInbox.request_id))
    query = (
        select(ApprovalInbox.request_id, AccessRequest.status)
        .join(AccessRequest, col(AccessRequest.id) == ApprovalInbox.request_id)
        .where(ApprovalInbox.approver == user.email)
    )
    with session_scope(settings.db_url, write=False) as session:
        if after is not None:
            since = session.exec(select(AccessRequest.created_at).where(AccessRequest.id == after)).first()
            if since is None:
                raise Refusal(RefusalKind.INVALID, f"there is no request {after!r} to list after", field="after")
            query = query.where(tuple_(*order) > tuple_(literal(since, UTCDateTime()), literal(after)))
        rows = session.exec(query.order_by(*order).limit(limit + 1)).all()
    page = rows[:limit]
    statuses = [RequestStatus.model_validate(recorded) for _, recorded in page]
    waiting = [status for status in statuses if status.awaits_decision_from(user.email)]
    return Awaiting(waiting, next_after=page[-1][0] if len(rows) > limit else None)


# --- starting -----------------------------------------------------------------------------


def requestable_role(session: Session, role_path: str) -> Role:
    """The role a request names, or the refusal saying why it cannot be asked for (unknown, or gone from its
    target at the last discovery)."""
    role = catalog.find_role(session, role_path)
    if role is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no role {role_path!r}; see GET /api/catalog", field="role")
    if role.missing:
        raise Refusal(
            RefusalKind.CONFLICT,
            f"role {role.path} was not found in its target at the last discovery; "
            "it can be requested again once it is back",
            field="role",
        )
    return role


def _plan(settings: Settings, requester: User, role_path: str, duration: timedelta, justification: str) -> RequestPlan:
    """The policy's plan for this request, or its refusal (``access.policy.PolicyError`` is one)."""
    with session_scope(settings.db_url, write=False) as session:
        role = requestable_role(session, role_path)
        approval = catalog.policy_for(session, role)
        context = catalog.policy_context(session, requester, role, approval)
    context = on_call_context(settings, context, approval)  # PagerDuty/Opsgenie, with no DB session held
    return evaluate_policy(approval, context, duration=duration, justification=justification)


async def create_request(
    client: Client,
    settings: Settings,
    requester: User,
    *,
    role: str,
    duration: timedelta,
    justification: str,
    sign_in: SignIn,
    emergency: bool = False,
) -> RequestStatus:
    """Validate a request against its policy and start its workflow; nothing starts if it is refused. One the
    policy approves at once, under a workflow that says ``reauthenticate_within``, needs a sign-in that recent.
    An ``emergency`` (break-glass) request is granted at once where its role allows it, and reviewed afterwards
    (``starter.services.break_glass``).

    When more requests are being started than the workers record, a new one is turned away at once
    (unavailable, with a time to retry after) rather than held: nothing is started for it.
    """
    async with _admitted(settings):
        return await _create_request(
            client,
            settings,
            requester,
            role=role,
            duration=duration,
            justification=justification,
            sign_in=sign_in,
            emergency=emergency,
        )


async def _create_request(
    client: Client,
    settings: Settings,
    requester: User,
    *,
    role: str,
    duration: timedelta,
    justification: str,
    sign_in: SignIn,
    emergency: bool = False,
) -> RequestStatus:
    from starter.services import break_glass  # which reviews through this module's updates

    request_id = new_request_id()
    try:
        if emergency:  # one per person and role at a time: claimed across API processes, before it is checked
            await asyncio.to_thread(break_glass.claim_start, settings, requester.email, role, request_id)
        else:  # an emergency asks no approver: never held back by the pending cap
            await asyncio.to_thread(_below_pending_cap, settings, requester)
    except Refusal as refusal:
        raise await _audited(settings, requester, role, refusal) from None
    release = emergency
    try:
        planner = break_glass.emergency_plan if emergency else _plan
        start = await _prepare_start(settings, requester, request_id, planner, role, duration, justification, sign_in)
        try:
            return await _submit(client, settings, request_id, start)
        except Refusal as refusal:
            # Naming the request means its run exists, or may: the claim stays until it is recorded, then goes stale.
            release = emergency and "id" not in refusal.extra
            raise
        except BaseException:  # cancelled or failed in the middle of the start: whether it started is not known
            release = False
            raise
    finally:
        if release:
            await asyncio.to_thread(break_glass.release_start, settings, requester.email, role, request_id)


async def _audited(settings: Settings, requester: User, role: str, refusal: Refusal) -> Refusal:
    """The refusal of a new request, audited."""
    return await asyncio.to_thread(refused, settings, requester.email, "request.create", role, refusal)


async def _prepare_start(
    settings: Settings,
    requester: User,
    request_id: str,
    planner: Callable[[Settings, User, str, timedelta, str], RequestPlan],
    role: str,
    duration: timedelta,
    justification: str,
    sign_in: SignIn,
) -> WithStartWorkflowOperation[Any, Any]:
    """The request's plan, checked, as the operation that starts its workflow; nothing is started yet."""
    try:
        # The app DB is read in a thread: the API's event loop serves every other caller meanwhile.
        plan = await asyncio.to_thread(planner, settings, requester, role, duration, justification)
    except Refusal as refusal:
        raise await _audited(settings, requester, role, refusal) from None
    if not plan.steps and plan.reauthenticate_within is not None:  # approved at once: as fresh as an extension
        await asyncio.to_thread(require_recent_to_request, settings, sign_in, requester, plan, role)
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
    return WithStartWorkflowOperation(
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


async def _submit(
    client: Client, settings: Settings, request_id: str, start: WithStartWorkflowOperation[Any, Any]
) -> RequestStatus:
    """Start the request's workflow and wait for it to record the request; a refusal that names the request
    (``extra["id"]``) says its run exists or may."""
    try:
        # One deadline for the whole exchange: the client asks again on its own while no worker takes the update.
        status: RequestStatus = await asyncio.wait_for(
            client.execute_update_with_start_workflow(
                AccessRequestWorkflow.submit, start_workflow_operation=start, rpc_timeout=settings.submit_timeout
            ),
            settings.submit_timeout.total_seconds(),
        )
    except (UpdateTimedOut, TimeoutError):
        if not await _started(client, request_id):
            raise Refusal(
                RefusalKind.UNAVAILABLE,
                f"the workflow service did not answer within {format_duration(settings.submit_timeout)}: "
                "nothing was started, try again",
                retry_after=2,
            ) from None
        raise Refusal(
            RefusalKind.UNAVAILABLE,
            f"request {request_id} was started but no Lapse worker recorded it within "
            f"{format_duration(settings.submit_timeout)}; it proceeds once a worker runs",
            extra={"id": request_id},
        ) from None
    except RPCError as error:
        # Temporal failed mid-call: the request may have started all the same. Say which, so that a caller
        # who retries does not make a second request.
        raise await _start_failed(client, request_id, error) from None
    return status


PENDING_RETRY_AFTER = 60
"""Seconds a requester at the pending cap is told to wait: until an approver decides, which no one can foretell."""


def _below_pending_cap(settings: Settings, requester: User) -> None:
    """Refuse a new request from someone with ``max_pending_per_requester`` requests awaiting approval already, so
    that nobody floods the approvers (admins and service accounts alike; 0: no cap). Requests being started at the
    same moment are not counted yet: a burst may pass the cap by those the API is starting at once."""
    cap = settings.max_pending_per_requester
    if cap == 0:
        return
    with session_scope(settings.db_url, write=False) as session:
        pending = session.exec(
            select(func.count())
            .select_from(AccessRequest)
            .where(AccessRequest.requester == requester.email, AccessRequest.state == RequestState.PENDING.value)
        ).one()
    if pending >= cap:
        raise Refusal(
            RefusalKind.TOO_MANY,
            f"you have {pending} requests awaiting approval, the most one person may "
            f"(LAPSE_MAX_PENDING_PER_REQUESTER is {cap}): withdraw one (POST /api/requests/<id>/cancel) or wait "
            "for a decision before asking again",
            retry_after=PENDING_RETRY_AFTER,
            extra={"limit": cap},
        )


async def _started(client: Client, request_id: str) -> bool:
    """Whether the request's run exists (True when the workflow service cannot say: never "nothing started"
    for one that may have)."""
    try:
        await client.get_workflow_handle(names.request_workflow_id(request_id)).describe()
    except RPCError as error:
        return error.status is not RPCStatusCode.NOT_FOUND
    return True


async def _start_failed(client: Client, request_id: str, error: RPCError) -> Refusal:
    """What to tell a caller whose request start failed with ``error``: started after all, or not."""
    unavailable = RefusalKind.UNAVAILABLE
    try:
        await client.get_workflow_handle(names.request_workflow_id(request_id)).describe()
    except RPCError as describe_error:
        if describe_error.status is RPCStatusCode.NOT_FOUND:
            return Refusal(
                unavailable,
                f"the workflow service failed ({error.message}): nothing was started, try again",
                retry_after=2,
            )
        return Refusal(
            unavailable,
            f"the workflow service failed ({error.message}) and request {request_id} may have started: "
            f"GET /api/requests/{request_id} shows it once it is recorded; check there before asking again",
            retry_after=5,
            extra={"id": request_id},
        )
    return Refusal(
        unavailable,
        f"request {request_id} was started but the workflow service failed before it was recorded "
        f"({error.message}); it proceeds: GET /api/requests/{request_id}",
        extra={"id": request_id},
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
        raise Refusal(
            RefusalKind.UNAVAILABLE,
            f"Lapse is starting {settings.max_pending_submits} requests already and its workers are behind; "
            "nothing was started for this one: try again shortly",
            retry_after=2,
        ) from None
    try:
        yield
    finally:
        places.release()


# --- updates to a running request ---------------------------------------------------------


async def send_update(
    client: Client, settings: Settings, actor: str, request_id: str, update: Any, arg: Any, action: str
) -> RequestStatus:
    """Send the request's workflow an update and return its status after it; a refusal is audited (it
    leaves no history) and raised."""
    known = await asyncio.to_thread(stored_status, settings, request_id)
    if known is None:
        raise _not_found(request_id)
    handle = client.get_workflow_handle(names.request_workflow_id(request_id))
    try:
        # The update answers small (its answer stays in history) once the app DB holds what it did; the
        # whole status is read there, which costs Temporal nothing.
        # One deadline for the whole exchange: the client asks again on its own while no worker takes the update.
        await asyncio.wait_for(
            handle.execute_update(update, arg, result_type=RequestAck), settings.submit_timeout.total_seconds()
        )
        current = await asyncio.to_thread(stored_status, settings, request_id)
        assert current is not None
        return current
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        if isinstance(cause, ApplicationError):
            refusal = Refusal.of_workflow(cause)
        else:
            refusal = Refusal(RefusalKind.CONFLICT, str(cause))
    except (UpdateTimedOut, TimeoutError):
        raise _maybe_applied(request_id, action) from None
    except RPCError as error:
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise _maybe_applied(request_id, action) from None
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        latest = await asyncio.to_thread(stored_status, settings, request_id)
        reason = f"request {request_id} has ended ({(latest or known).state.value})"
        refusal = Refusal(RefusalKind.CONFLICT, reason)
    target = names.request_workflow_id(request_id)
    raise await asyncio.to_thread(refused, settings, actor, action, target, refusal)


def _maybe_applied(request_id: str, action: str) -> Refusal:
    """An update the workflow service took but whose answer did not come in time: it may have been done."""
    return Refusal(
        RefusalKind.UNAVAILABLE,
        f"request {request_id} did not answer {action} in time: it may still take effect once a worker runs it; "
        "read the request before trying again",
        retry_after=5,
    )


async def decide(
    client: Client,
    settings: Settings,
    actor: User,
    request_id: str,
    *,
    approved: bool,
    comment: str,
    sign_in: SignIn,
) -> RequestStatus:
    """Approve or deny the request's open step (or its pending extension's). Approving under a workflow that says
    ``reauthenticate_within`` needs a sign-in that recent (``sign_in``); denying takes access from nobody."""
    update = AccessRequestWorkflow.approve if approved else AccessRequestWorkflow.deny
    action = "request.approve" if approved else "request.deny"
    if approved:
        await asyncio.to_thread(_recent_enough_to_approve, settings, sign_in, actor, request_id)
    await asyncio.to_thread(_still_eligible, settings, actor, request_id, action)
    decision = DecisionInput(actor=actor.email, comment=comment, request_id=request_id)
    return await send_update(client, settings, actor.email, request_id, update, decision, action)


def _recent_enough_to_approve(settings: Settings, sign_in: SignIn, actor: User, request_id: str) -> None:
    """Whoever approves, eligible or not (the stored status may lag the workflow's), under a workflow asking for
    a recent sign-in must have one: the workflow judges eligibility, this the sign-in."""
    status = stored_status(settings, request_id)
    if status is None:
        return  # ``send_update`` says there is no such request
    pending = status.extensions[-1] if status.extensions else None
    extension = pending is not None and pending.state is ExtensionState.PENDING
    doing = f"approving {'an extension of ' if extension else ''}request {request_id}"
    require_recent_sign_in(settings, sign_in, actor, status, action="request.approve", doing=doing)


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
    if actor.email not in resolve_approvers(deciders(step), context):
        target = names.request_workflow_id(request_id)
        refusal = Refusal(
            RefusalKind.FORBIDDEN, f"{actor.email} is no longer an eligible approver for step {step.name!r}"
        )
        raise refused(settings, actor.email, action, target, refusal)


async def cancel(
    client: Client, settings: Settings, actor: User, request_id: str, *, comment: str, sign_in: SignIn
) -> RequestStatus:
    """Withdraw a pending request (its requester or an admin). An admin ending someone else's request under a
    workflow that says ``reauthenticate_within`` needs a sign-in that recent; its requester never does."""
    await asyncio.to_thread(require_recent_end, settings, sign_in, actor, request_id, "request.cancel")
    arg = EndInput(actor=actor.email, is_admin=actor.is_admin, comment=comment, request_id=request_id)
    return await send_update(
        client, settings, actor.email, request_id, AccessRequestWorkflow.cancel, arg, "request.cancel"
    )


def require_recent_end(settings: Settings, sign_in: SignIn, actor: User, request_id: str, action: str) -> None:
    """Ending someone else's request or grant (an admin) under a workflow that asks for a recent sign-in needs
    one; its requester withdrawing or giving back their own never does (it only takes their access away)."""
    if not actor.is_admin:
        return  # only its requester or an admin may end a request: the workflow refuses anyone else, saying so
    status = stored_status(settings, request_id)
    if status is None or status.requester == actor.email:
        return  # none: ``send_update`` says there is no such request
    doing = f"ending {status.requester}'s request {request_id}"
    require_recent_sign_in(settings, sign_in, actor, status, action=action, doing=doing)


async def extend(
    client: Client,
    settings: Settings,
    actor: User,
    request_id: str,
    *,
    duration: timedelta,
    justification: str,
    sign_in: SignIn,
) -> RequestStatus:
    """Ask for more time on an active grant; the policy judges the grant's new total length. Under a workflow
    that says ``reauthenticate_within``, asking needs a sign-in that recent."""
    arg = await asyncio.to_thread(_judge_extension, settings, actor, request_id, duration, justification)
    status = await asyncio.to_thread(stored_status, settings, request_id)
    assert status is not None  # ``_judge_extension`` found it
    doing = f"asking to extend request {request_id}"
    await asyncio.to_thread(  # the window the request started under, or the policy's now where stricter
        require_recent_sign_in, settings, sign_in, actor, status, action="grant.extend", doing=doing, plan=arg.plan
    )
    return await send_update(
        client, settings, actor.email, request_id, AccessRequestWorkflow.extend, arg, "grant.extend"
    )


def _judge_extension(
    settings: Settings, actor: User, request_id: str, duration: timedelta, justification: str
) -> ExtendInput:
    """The policy's verdict on the grant's new total length, from the stored status; a refusal is audited."""
    status = stored_status(settings, request_id)
    if status is None:
        raise _not_found(request_id)
    target = names.request_workflow_id(request_id)
    try:
        if status.state is not RequestState.ACTIVE or status.granted_at is None or status.expires_at is None:
            raise Refusal(
                RefusalKind.CONFLICT,
                f"request {request_id} is {status.state.value}: only an active grant can be extended",
            )
        if duration <= timedelta(0):
            raise Refusal(RefusalKind.INVALID, "the extension must be longer than zero", field="duration")
        total = status.expires_at + duration - status.granted_at
        plan = _plan(settings, actor, status.role, total, justification or status.justification)
    except Refusal as refusal:
        raise refused(settings, actor.email, "grant.extend", target, refusal) from None
    return ExtendInput(
        request_id=request_id,
        actor=actor.email,
        duration=duration,
        justification=justification,
        plan=plan,
        total=total,
    )

"""Break-glass on behalf of an authenticated caller: plan an emergency request, review one afterwards, list them.

The rules are ``access.break_glass``'s; ``starter.services.requests`` starts an emergency request like any other
with the plan made here, unless its requester holds an emergency grant of the role already or had one condemned
within its ``review_within`` (grants are counted per account and role: ``store.break_glass``). A review's verdict
goes to its ``BreakGlassReviewWorkflow`` as an update; a condemned emergency grant is then revoked at once, with
every other emergency grant of the role its requester holds, through each request's own revoke, as the person who
condemned it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import case
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.break_glass import (
    BreakGlassReview,
    ReviewState,
    Verdict,
    VerdictInput,
    plan_break_glass,
    verdict_refusal,
)
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.limits import MAX_TEXT
from access.requests import EndInput, RequestStatus
from access.types import BreakGlass, RequestPlan
from starter.services.audit import refused
from starter.services.authorization import require_admin, require_request_reader
from starter.services.recent_sign_in import SignIn, require_recent_sign_in
from starter.services.requests import requestable_role, send_update, stored_status
from store import break_glass as stored_break_glass
from store import catalog, groups
from store.db import session_scope
from store.settings import Settings
from store.tables import BreakGlassReview as ReviewRow
from store.tables import User
from workflows.access_request import AccessRequestWorkflow
from workflows.break_glass import BreakGlassReviewWorkflow

log = logging.getLogger(__name__)

DEFAULT_NOTIFY = "security"
"""The group told of an emergency grant when its role names none, if the organisation has one."""
MAX_LIST = 500


# --- asking ---------------------------------------------------------------------------------


def emergency_plan(
    settings: Settings, requester: User, role_path: str, duration: timedelta, justification: str
) -> RequestPlan:
    """The plan of an emergency request, or the refusal saying why there is none (the role does not allow it, the
    reason is missing, the duration is over its cap, the requester may not ask for the role at all)."""
    with session_scope(settings.db_url, write=False) as session:
        role = requestable_role(session, role_path)
        allowance = BreakGlass.model_validate(role.break_glass) if role.break_glass is not None else None
        if allowance is not None:
            _refuse_a_second(session, requester.email, role.path, allowance)
        approval = catalog.policy_for(session, role)
        context = catalog.policy_context(session, requester, role, approval)
        refs = (allowance.notify if allowance.notify is not None else [DEFAULT_NOTIFY]) if allowance else []
        resolved = groups.resolve(session, refs)
        notify = sorted({p for group_id in resolved.values() for p in catalog.active_members(session, group_id)})
    return plan_break_glass(approval, context, allowance, notify=notify, duration=duration, justification=justification)


def _refuse_a_second(session: Session, requester: str, role: str, allowance: BreakGlass) -> None:
    """Refuse an emergency request while the requester holds one of the role, or within ``review_within`` of one
    being condemned: grants are counted per account and role, so a second one would outlive the first's
    condemnation, and asking again at once would undo it."""
    held = stored_break_glass.emergencies(session, requester, role)
    if held:
        open_one = held[0]
        raise Refusal(
            RefusalKind.CONFLICT,
            f"you already have emergency request {open_one.id} for {role} ({open_one.state.value}); "
            "it must end before you ask for emergency access to the role again",
            field="role",
            extra={"open_request": open_one.id},
        )
    window = allowance.review_within
    condemned = stored_break_glass.last_condemned(session, requester, role, datetime.now(UTC) - window)
    if condemned is not None and condemned.decided_at is not None:
        again = condemned.decided_at + window
        raise Refusal(
            RefusalKind.CONFLICT,
            f"your emergency access to {role} (request {condemned.request_id}) was condemned by "
            f"{condemned.decided_by} at {condemned.decided_at:%Y-%m-%d %H:%M} UTC; no emergency request for it is "
            f"taken before {again:%Y-%m-%d %H:%M} UTC ({format_duration(window)} later): request it the normal way",
            field="role",
            extra={"condemned_request": condemned.request_id},
        )


def claim_start(settings: Settings, requester: str, role_path: str, request_id: str) -> None:
    """Claim the start of an emergency request, or refuse it (409, naming the other) while the requester's emergency
    request of the role is being started already, in this API process or another: the "one at a time" check of
    ``emergency_plan`` then runs after the other is recorded. A claim left by a process that died during a start is
    taken over after twice the submit timeout."""
    now = datetime.now(UTC)
    role = role_path.strip()
    with session_scope(settings.db_url) as session:
        held = stored_break_glass.claim_start(
            session, requester, role, request_id, now, now - 2 * settings.submit_timeout
        )
    if held is not None:
        raise Refusal(
            RefusalKind.CONFLICT,
            f"your emergency request {held.request_id} for {role} is being started (since "
            f"{held.started_at:%H:%M:%S} UTC): see GET /api/requests/{held.request_id} in a moment; one emergency "
            "request of a role at a time",
            field="role",
            extra={"open_request": held.request_id},
        )


def release_start(settings: Settings, requester: str, role_path: str, request_id: str) -> None:
    """Release ``claim_start``'s claim: the request is recorded, or nothing was started. If the app DB fails now,
    the claim goes stale instead, and the caller still hears how the request went."""
    try:
        with session_scope(settings.db_url) as session:
            stored_break_glass.release_start(session, requester, role_path.strip(), request_id)
    except SQLAlchemyError:
        log.warning("the claim of emergency request %s could not be released; it goes stale", request_id, exc_info=True)


def allowance_of(settings: Settings, role_path: str) -> BreakGlass | None:
    """The role's emergency access, or None: it offers none."""
    with session_scope(settings.db_url, write=False) as session:
        role = catalog.find_role(session, role_path)
        return BreakGlass.model_validate(role.break_glass) if role and role.break_glass is not None else None


# --- reading --------------------------------------------------------------------------------


def _review_of(row: ReviewRow) -> BreakGlassReview:
    return BreakGlassReview.model_validate(row, from_attributes=True)


def stored_review(settings: Settings, request_id: str) -> BreakGlassReview | None:
    with session_scope(settings.db_url, write=False) as session:
        row = session.get(ReviewRow, request_id)
        return _review_of(row) if row is not None else None


def get_review(settings: Settings, user: User, request_id: str) -> BreakGlassReview | None:
    """An emergency request's review, for those who may see the request; None for a request that is no
    emergency (or whose review is still being opened)."""
    status = stored_status(settings, request_id)
    if status is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no request {request_id!r}", field="id")
    require_request_reader(user, status)
    return stored_review(settings, request_id)


def list_reviews(
    settings: Settings, admin: User, *, flagged_only: bool = False, limit: int = 100
) -> list[BreakGlassReview]:
    """Every emergency grant with its review, for admins: flagged ones (condemned, unreviewed) first, then open
    ones, each newest first."""
    require_admin(admin)
    if not 1 <= limit <= MAX_LIST:
        raise Refusal(RefusalKind.INVALID, f"limit must be between 1 and {MAX_LIST}", field="limit")
    flagged = [ReviewState.CONDEMNED.value, ReviewState.UNREVIEWED.value]
    rank = case(
        (col(ReviewRow.state).in_(flagged), 0),
        (col(ReviewRow.state) == ReviewState.OPEN.value, 1),
        else_=2,
    )
    query = select(ReviewRow).order_by(rank, col(ReviewRow.opened_at).desc()).limit(limit)
    if flagged_only:
        query = query.where(col(ReviewRow.state).in_(flagged))
    with session_scope(settings.db_url, write=False) as session:
        return [_review_of(row) for row in session.exec(query)]


# --- reviewing ------------------------------------------------------------------------------


async def review(
    client: Client,
    settings: Settings,
    actor: User,
    request_id: str,
    *,
    verdict: Verdict,
    comment: str,
    sign_in: SignIn,
) -> BreakGlassReview:
    """Confirm or condemn an emergency grant (a reviewer or an admin, never its requester). Confirming under a
    workflow that says ``reauthenticate_within`` needs a sign-in that recent, as approving does; condemning
    never does, and revokes the grant at once, through the request's revoke, as ``actor``."""
    action = f"break_glass.{verdict.value}"
    target = names.request_workflow_id(request_id)
    known = await asyncio.to_thread(stored_review, settings, request_id)
    if known is None:
        refusal = Refusal(RefusalKind.NOT_FOUND, f"request {request_id!r} has no break-glass review", field="id")
        raise await asyncio.to_thread(refused, settings, actor.email, action, target, refusal)
    arg = VerdictInput(
        request_id=request_id, actor=actor.email, is_admin=actor.is_admin, verdict=verdict, comment=comment
    )
    why = verdict_refusal(known, arg)
    if why is not None:
        raise await asyncio.to_thread(refused, settings, actor.email, action, target, why)
    if verdict is Verdict.CONFIRM:
        await asyncio.to_thread(_recent_enough_to_confirm, settings, sign_in, actor, request_id)
    handle = client.get_workflow_handle(names.break_glass_workflow_id(request_id))
    try:
        decided = await handle.execute_update(BreakGlassReviewWorkflow.decide, arg)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        if isinstance(cause, ApplicationError):
            refusal = Refusal.of_workflow(cause)
        else:
            refusal = Refusal(RefusalKind.CONFLICT, str(cause))
        raise await asyncio.to_thread(refused, settings, actor.email, action, target, refusal) from None
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        latest = await asyncio.to_thread(stored_review, settings, request_id)
        state = (latest or known).state.value
        refusal = Refusal(RefusalKind.CONFLICT, f"the review of request {request_id} is {state}")
        raise await asyncio.to_thread(refused, settings, actor.email, action, target, refusal) from None
    if verdict is Verdict.CONDEMN:
        await _revoke_condemned(client, settings, actor, decided, comment)
    return decided


def _recent_enough_to_confirm(settings: Settings, sign_in: SignIn, actor: User, request_id: str) -> None:
    status = stored_status(settings, request_id)
    if status is not None:
        doing = f"confirming emergency request {request_id}"
        require_recent_sign_in(settings, sign_in, actor, status, action="break_glass.confirm", doing=doing)


async def _revoke_condemned(
    client: Client, settings: Settings, actor: User, review: BreakGlassReview, comment: str
) -> None:
    """Revoke a condemned emergency grant now, with every other emergency grant of the role its requester still
    holds (grants are counted per account and role: one left would keep the access), each through its request's
    revoke, as ``actor``. One that ended already has nothing to take; one ``actor`` may not revoke (not among its
    reviewers, no admin) stays, and the condemn's notice said so (``activities.break_glass``)."""
    held = await asyncio.to_thread(_held_emergencies, settings, review)
    said = "break-glass condemned: "
    reason = said + comment[: MAX_TEXT - len(said)]
    for status in held:
        if not stored_break_glass.revocable_by(status, actor.email, is_admin=actor.is_admin):
            continue
        arg = EndInput(actor=actor.email, is_admin=actor.is_admin, condemned=True, comment=reason, request_id=status.id)
        update = AccessRequestWorkflow.revoke
        try:
            await send_update(client, settings, actor.email, status.id, update, arg, "grant.revoke")
        except Refusal as refusal:
            if refusal.kind is not RefusalKind.CONFLICT:  # a conflict: it ended meanwhile, as wanted
                raise


def _held_emergencies(settings: Settings, review: BreakGlassReview) -> list[RequestStatus]:
    """The condemned request first if it is still held, then the requester's other held emergency grants of the
    role."""
    with session_scope(settings.db_url, write=False) as session:
        held = stored_break_glass.emergencies(session, review.requester, review.role, stored_break_glass.HELD)
    return sorted(held, key=lambda status: status.id != review.request_id)

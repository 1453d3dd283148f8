"""Carrying a campaign's decisions out through the paths that exist, and recording the proof each revoke happened.

A revoke decision is claimed first (``acted_at`` set, in one transaction with a birthright exception when there
is one), then asked for with no transaction open: a JIT grant's own request workflow is sent its ``revoke``
update (so its history stays true), an external grant (or a JIT one whose run is gone) goes to
``GrantRevokeWorkflow`` by its ledger row (one run per grant: ``revoke-grant-<id>``), and a birthright grant
becomes a ``BirthrightException`` the birthright sync acts on. Every path is idempotent and the ledger calls a
target once per grant, so asking again after a worker died repeats no revoke. Settling looks at the claimed
items' grants: once a grant ended, the item records the audit event that ended it and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.grants import GrantPath, LedgerRevokeInput
from access.requests import EndInput
from access.review_runs import ActInput, ActResult, SettleInput, SettleResult
from access.reviews import ItemDecision, ItemOutcome, ItemState
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.liveness import heartbeating_async
from activities.runs import request_run
from store.db import session_scope
from store.tables import AccessRequest, AuditEvent, BirthrightException, Grant, ReviewItem

ASK_AT_ONCE = 20
"""Revokes asked of Temporal at the same time."""


@dataclass(frozen=True)
class Revoke:
    """A claimed revoke to ask for: by whom, why, and through which path."""

    item_id: int
    grant_id: int
    path: str
    request_id: str | None
    actor: str
    comment: str


def _comment(campaign_id: str, item: ReviewItem) -> str:
    why = f"access review {campaign_id}"
    return f"{why}: {item.comment}" if item.comment else why


def _audit_head(session: Session) -> int:
    return session.execute(sa_select(func.max(col(AuditEvent.id)))).scalar() or 0


class ReviewRevokeActivities:
    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.carry_out_review_batch, self.settle_review_batch]

    @activity.defn(name=names.CARRY_OUT_REVIEW_BATCH)
    async def carry_out_review_batch(self, input: ActInput) -> ActResult:
        """Carry out up to ``limit`` submitted revokes after ``after_id``; at close also settle every kept item."""
        async with heartbeating_async():
            result, revokes = await asyncio.to_thread(self._claim, input)
            await ask(activity.client(), activity.info().task_queue, revokes)
        return result

    def _claim(self, input: ActInput) -> tuple[ActResult, list[Revoke]]:
        result = ActResult()
        revokes: list[Revoke] = []
        now = datetime.now(UTC)
        with session_scope(self._db_url) as session:
            if input.closing:
                session.execute(
                    update(ReviewItem)
                    .where(col(ReviewItem.campaign_id) == input.campaign_id)
                    .where(col(ReviewItem.state) == ItemState.DECIDED, col(ReviewItem.decision) == ItemDecision.KEEP)
                    .where(col(ReviewItem.acted_at).is_(None))
                    .values(state=ItemState.DONE.value, outcome=ItemOutcome.KEPT.value, acted_at=now)
                )
            items = session.exec(
                select(ReviewItem)
                .where(ReviewItem.campaign_id == input.campaign_id, col(ReviewItem.id) > input.after_id)
                .where(ReviewItem.state == ItemState.DECIDED, ReviewItem.decision == ItemDecision.REVOKE)
                .where(col(ReviewItem.acted_at).is_(None))
                .order_by(col(ReviewItem.id))
                .limit(input.limit)
                .with_for_update()
            ).all()
            if not items:
                return result, revokes
            result.last_id, result.more = items[-1].id, len(items) == input.limit
            head = _audit_head(session)
            grants = {
                g.id: g for g in session.exec(select(Grant).where(col(Grant.id).in_([i.grant_id for i in items])))
            }
            for item in items:
                assert item.id is not None
                grant = grants.get(item.grant_id)
                item.acted_at = now
                if grant is None or not grant.active:
                    ended = grant.ended_at.isoformat() if grant is not None and grant.ended_at else None
                    item.state, item.outcome, item.proof = ItemState.DONE, ItemOutcome.ALREADY_GONE, {"ended_at": ended}
                elif item.path == GrantPath.BIRTHRIGHT:
                    if self._exception(session, input.campaign_id, item, grant, now):
                        result.exceptions += 1
                    item.proof = {"requested_at": now.isoformat(), "after_event": head, "via": "birthright exception"}
                else:
                    via = "request" if item.path == GrantPath.JIT and item.request_id else "revoke workflow"
                    item.proof = {"requested_at": now.isoformat(), "after_event": head, "via": via}
                    actor = item.decided_by or "lapse"
                    revokes.append(
                        Revoke(
                            item.id, item.grant_id, item.path, item.request_id, actor, _comment(input.campaign_id, item)
                        )
                    )
                    result.revokes += 1
                session.add(item)
        return result, revokes

    def _exception(self, session: Session, campaign_id: str, item: ReviewItem, grant: Grant, now: datetime) -> bool:
        """The policy stops granting the role to the user; False (the item fails) if the grant names no policy."""
        if not grant.policy or not item.user_email:
            item.state, item.outcome = ItemState.DONE, ItemOutcome.REVOKE_FAILED
            item.error = "the birthright grant names no policy (or no user) to make an exception on"
            return False
        exists = session.exec(
            select(BirthrightException).where(
                BirthrightException.policy == grant.policy,
                BirthrightException.user_email == item.user_email,
                BirthrightException.role == item.role,
            )
        ).first()
        if exists is None:
            session.add(
                BirthrightException(
                    policy=grant.policy,
                    user_email=item.user_email,
                    role=item.role,
                    created_by=item.decided_by or "lapse",
                    created_at=now,
                    comment=_comment(campaign_id, item),
                    campaign_id=campaign_id,
                    item_id=item.id,
                )
            )
        return True

    @activity.defn(name=names.SETTLE_REVIEW_BATCH)
    async def settle_review_batch(self, input: SettleInput) -> SettleResult:
        """Record the proof of the revokes that are done; ask again for those not done (idempotent)."""
        async with heartbeating_async():
            result, again = await asyncio.to_thread(self._settle, input)
            await ask(activity.client(), activity.info().task_queue, again)
        return result

    def _settle(self, input: SettleInput) -> tuple[SettleResult, list[Revoke]]:
        result = SettleResult()
        again: list[Revoke] = []
        with session_scope(self._db_url) as session:
            pending = (
                col(ReviewItem.campaign_id) == input.campaign_id,
                col(ReviewItem.acted_at).is_not(None),
                col(ReviewItem.outcome).is_(None),
            )
            items = session.exec(
                select(ReviewItem).where(*pending).order_by(col(ReviewItem.id)).limit(input.limit).with_for_update()
            ).all()
            grants = {
                g.id: g for g in session.exec(select(Grant).where(col(Grant.id).in_([i.grant_id for i in items])))
            }
            for item in items:
                assert item.id is not None
                grant = grants.get(item.grant_id)
                if grant is not None and grant.active:
                    if item.path == GrantPath.BIRTHRIGHT:
                        if self._policy_moved(session, item, grant):
                            result.settled += 1
                        else:
                            result.birthright_pending = True
                    else:
                        via_request = item.path == GrantPath.JIT and item.request_id
                        actor = item.decided_by or "lapse"
                        comment = _comment(input.campaign_id, item)
                        again.append(
                            Revoke(
                                item.id,
                                item.grant_id,
                                item.path,
                                item.request_id if via_request else None,
                                actor,
                                comment,
                            )
                        )
                    continue
                event = _proof_event(session, item, grant)
                if event is None and _request_ending(session, item):
                    continue  # the grant ended; its request's run records how a moment later
                proof = dict(item.proof)
                proof["ended_at"] = grant.ended_at.isoformat() if grant is not None and grant.ended_at else None
                if event is not None:
                    proof["audit_event"], proof["audit_action"] = event.id, event.action
                    item.outcome = ItemOutcome.EXCEPTION if item.path == GrantPath.BIRTHRIGHT else ItemOutcome.REVOKED
                else:
                    item.outcome = ItemOutcome.ALREADY_GONE  # it ended otherwise (expired, revoked by hand)
                item.state, item.proof = ItemState.DONE, proof
                session.add(item)
                result.settled += 1
            remaining = session.execute(sa_select(func.count()).where(*pending)).scalar() or 0
            result.pending = remaining
        return result, again

    def _policy_moved(self, session: Session, item: ReviewItem, grant: Grant) -> bool:
        """A birthright grant the sync will not take away (failed): another policy now accounts for it, or the
        exception was removed before the sync acted on it. False while an exception on its policy awaits the sync.

        Any exception for the user and role counts, not only the one this item made: an earlier campaign's may
        have been there already (the claim then makes none), and waiting for one of our own would never end."""
        excepted = session.exec(
            select(BirthrightException).where(
                BirthrightException.user_email == item.user_email, BirthrightException.role == item.role
            )
        ).all()
        if any(exception.policy == grant.policy for exception in excepted):
            return False  # the sync has yet to act on it
        item.state, item.outcome = ItemState.DONE, ItemOutcome.REVOKE_FAILED
        if excepted:
            policy = next((e.policy for e in excepted if e.item_id == item.id), excepted[0].policy)
            item.error = (
                f"birthright policy {grant.policy!r} also grants it: the exception on {policy!r} does not take it away"
            )
        else:
            item.error = (
                f"the exception was removed before the birthright sync acted on it: policy {grant.policy!r} still "
                "grants it"
            )
        session.add(item)
        return True


def _request_ending(session: Session, item: ReviewItem) -> bool:
    """A JIT grant whose request's run has not yet recorded its end (it ends the grant first, then says how)."""
    if item.path != GrantPath.JIT or not item.request_id:
        return False
    request = session.get(AccessRequest, item.request_id)
    return request is not None and request.ended_at is None


def _proof_event(session: Session, item: ReviewItem, grant: Grant | None) -> AuditEvent | None:
    """The audit event that ended the grant after the revoke was asked for, if there is one."""
    after = int(item.proof.get("after_event", 0))
    if item.path == GrantPath.JIT and item.request_id:
        target, action = names.request_workflow_id(item.request_id), "grant.revoked"

        def ours(event: AuditEvent) -> bool:
            return True
    elif item.path == GrantPath.BIRTHRIGHT:
        target, action = item.role, "birthright.revoked"

        def ours(event: AuditEvent) -> bool:
            return event.details.get("user") == item.user_email and not event.details.get("still_held")
    else:
        target, action = item.role, "grant.revoked"

        def ours(event: AuditEvent) -> bool:
            return event.details.get("grant_id") == item.grant_id

    events = session.exec(
        select(AuditEvent)
        .where(AuditEvent.target == target, AuditEvent.action == action, col(AuditEvent.id) > after)
        .order_by(col(AuditEvent.id))
        .limit(1000)
    )
    return next((event for event in events if ours(event)), None)


async def ask(client: Client, task_queue: str, revokes: list[Revoke]) -> None:
    """Ask for each revoke through its path, a few at a time."""
    for start in range(0, len(revokes), ASK_AT_ONCE):
        await asyncio.gather(*(_ask(client, task_queue, r) for r in revokes[start : start + ASK_AT_ONCE]))


async def _ask(client: Client, task_queue: str, revoke: Revoke) -> None:
    if revoke.path == GrantPath.JIT and revoke.request_id and (await request_run(client, revoke.request_id)).running:
        handle = client.get_workflow_handle(names.request_workflow_id(revoke.request_id))
        end = EndInput(actor=revoke.actor, is_admin=True, comment=revoke.comment, request_id=revoke.request_id)
        try:
            await handle.start_update("revoke", end, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
            return
        except WorkflowUpdateFailedError:
            return  # already ending or ended: its run carries that out
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise  # the activity is retried
    # An external grant, or a JIT one whose run is gone: by its ledger row, one revoke run per grant.
    await client.start_workflow(
        "GrantRevokeWorkflow",
        LedgerRevokeInput(grant_id=revoke.grant_id, actor=revoke.actor, comment=revoke.comment),
        id=names.grant_revoke_id(revoke.grant_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )

"""ReviewCampaignWorkflow: one access review campaign, from its snapshot to the proof of its revokes.

Its items live in the app DB; the run passes ids and counts only, works in batches, and continues as new
carrying a ``CampaignRun``, so 100,000 items keep its history small. Reminders, the deadline and an
escalation's deadline are durable timers; revokes go through the paths that exist (a JIT grant's own request
workflow, ``GrantRevokeWorkflow`` for an external one, a birthright exception the birthright sync acts on),
asked for by activities that claim each item first, so none is carried out twice.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.limits import HISTORY_EVENTS_BEFORE_CONTINUE
    from access.review_runs import (
        ActInput,
        ActResult,
        BeginCampaignInput,
        CampaignPlan,
        CampaignRef,
        CampaignResult,
        CampaignRun,
        CloseInput,
        CloseNowInput,
        DefaultInput,
        DefaultResult,
        OpenedCampaign,
        Phase,
        ReminderInput,
        ReviewCampaignInput,
        SettleInput,
        SettleResult,
        SnapshotInput,
        SnapshotResult,
        SweepResult,
    )
    from access.reviews import CampaignState, DefaultDecision, RevokeWhen
    from access.syncs import TriggerInput

SNAPSHOT_BATCH = 25_000
"""Grants read per snapshot activity (one transaction each, short enough for SQLite's other writers): four for
100,000."""
ACT_BATCH = 500
"""Items carried out per activity."""
SETTLE_BATCH = 2_000
SWEEP_EVERY = timedelta(hours=1)
"""How often an open campaign hands a leaver's items to the fallback and closes items whose grant ended."""
SETTLE_WAIT_MAX = timedelta(minutes=10)
"""The longest wait between two looks at revokes still being carried out (they drain at the targets' rate)."""

HEARTBEAT_TIMEOUT = timedelta(seconds=5)
"""The campaign's activities heartbeat every second: one lost with its worker is retried after this, not after
its start-to-close timeout (minutes, for a snapshot's batch ten: the campaign stood still that long)."""

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
"""Bookkeeping in the app DB: retried until it succeeds (a campaign must not end half done)."""


SAME_SECOND_RUNS = 20
"""How many runs of one definition may start within the same second (each a campaign id of its own)."""


@workflow.defn
class ReviewCampaignWorkflow:
    """A campaign's run: snapshot, remind, apply the default at the deadline, carry out, close, settle."""

    def __init__(self) -> None:
        self._opened: OpenedCampaign | None = None
        self._submitted = False
        self._close_by: str | None = None
        self._definition = ""

    @workflow.update
    async def opened(self) -> OpenedCampaign:
        """Sent with the start (update-with-start): answers once the snapshot is taken."""
        await workflow.wait_condition(lambda: self._opened is not None)
        assert self._opened is not None
        return self._opened

    @workflow.signal
    def submitted(self) -> None:
        """A reviewer submitted decisions: under ``revoke: at_once`` their revokes are carried out now."""
        self._submitted = True

    @workflow.signal
    def close_now(self, input: CloseNowInput) -> None:
        """An admin closes the campaign early: the defaults apply at once, then everything is carried out."""
        if self._close_by is None:
            self._close_by = input.by

    @workflow.run
    async def run(self, input: ReviewCampaignInput) -> CampaignResult:
        self._definition = input.definition
        if input.campaign_id is None:
            return await self._start_scheduled(input)
        run = input.run
        if run is None:
            plan: CampaignPlan = await self._act(
                names.BEGIN_REVIEW_CAMPAIGN,
                BeginCampaignInput(
                    campaign_id=input.campaign_id,
                    definition=input.definition,
                    started_by=input.started_by,
                    started_at=workflow.now(),
                ),
                CampaignPlan,
            )
            run = CampaignRun(plan=plan)
        self._submitted = self._submitted or run.submitted
        self._close_by = self._close_by or run.close_by
        campaign = run.plan.campaign_id
        if run.phase is Phase.SNAPSHOT:
            more = True
            while more:
                batch: SnapshotResult = await self._act(
                    names.SNAPSHOT_REVIEW_BATCH,
                    SnapshotInput(campaign_id=campaign, after_grant=run.snapshot_after, limit=SNAPSHOT_BATCH),
                    SnapshotResult,
                    within=timedelta(minutes=10),
                )
                run.snapshot_after, more = batch.last_grant, batch.more
            self._opened = await self._act(
                names.OPEN_REVIEW_CAMPAIGN, CampaignRef(campaign_id=campaign), OpenedCampaign
            )
            if self._opened.state is CampaignState.EMPTY:
                return CampaignResult(campaign_id=campaign, state=CampaignState.EMPTY)
            run.phase = Phase.OPEN
            run.next_sweep = workflow.now() + SWEEP_EVERY
        else:
            self._opened = OpenedCampaign(state=CampaignState.OPEN, items=0, reviewers=0)
        while run.phase in (Phase.OPEN, Phase.ESCALATED):
            await self._review(run)
        if run.phase is Phase.CLOSING:
            await self._carry_out(run, closing=True)
            await self._act(names.CLOSE_REVIEW_CAMPAIGN, CloseInput(campaign_id=campaign, by=run.close_by or "lapse"))
            run.phase = Phase.SETTLING
        await self._settle(run)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return CampaignResult(campaign_id=campaign, state=CampaignState.CLOSED)

    async def _start_scheduled(self, input: ReviewCampaignInput) -> CampaignResult:
        """A scheduled run names the campaign by its start and runs it as ``review-<campaign>``, waiting for it
        (so the schedule's overlap policy skips a run while one is open). Closing this run leaves it going."""
        base = names.review_campaign_id(input.definition, workflow.now())
        for attempt in range(1, SAME_SECOND_RUNS + 1):
            # Another run of the definition started in the same second (a trigger right after a scheduled run,
            # or a start by hand): its id is taken, for good, so this one is the next of that second.
            campaign_id = base if attempt == 1 else f"{base}-{attempt}"
            try:
                handle = await workflow.start_child_workflow(
                    ReviewCampaignWorkflow.run,
                    ReviewCampaignInput(
                        definition=input.definition, started_by=input.started_by, campaign_id=campaign_id
                    ),
                    id=names.review_workflow_id(campaign_id),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
            except WorkflowAlreadyStartedError:
                continue
            result: CampaignResult = await handle
            return result
        raise ApplicationError(
            f"{SAME_SECOND_RUNS} campaigns of {input.definition!r} started in the second {base[-15:]}: no more",
            non_retryable=True,
        )

    async def _review(self, run: CampaignRun) -> None:
        """One turn of an open campaign: whatever is due now, then sleep until the next thing is."""
        plan, campaign = run.plan, run.plan.campaign_id
        run.close_by = run.close_by or self._close_by
        now = workflow.now()
        deadline = plan.deadline if run.phase is Phase.OPEN else run.escalation_deadline
        assert deadline is not None
        due = [i for i, at in enumerate(plan.reminders) if i >= run.reminders_sent and at <= now]
        if due and run.phase is Phase.OPEN and run.close_by is None:
            # After an outage only the latest reminder due is sent: one reminder, not a burst of them. One due
            # at the deadline goes out before the default applies.
            label = plan.reminder_labels[due[-1]]
            await self._act(names.REMIND_REVIEWERS, ReminderInput(campaign_id=campaign, label=label), int)
            run.reminders_sent = due[-1] + 1
        if run.close_by is not None or now >= deadline:
            await self._deadline(run)
            return
        if run.next_sweep is None or now >= run.next_sweep:
            await self._act(names.SWEEP_REVIEW_CAMPAIGN, CampaignRef(campaign_id=campaign), SweepResult)
            run.next_sweep = now + SWEEP_EVERY
        if self._submitted and plan.revoke is RevokeWhen.AT_ONCE:
            self._submitted = False
            if await self._carry_out(run, closing=False):
                run.settle_at, run.settle_wait = workflow.now(), timedelta(seconds=1)
        if run.settle_at is not None and workflow.now() >= run.settle_at:
            settled = await self._settle_once(run)
            run.settle_at = None if settled.pending == 0 else workflow.now() + run.settle_wait
            run.settle_wait = min(run.settle_wait * 2, SETTLE_WAIT_MAX)
        self._continue_if_long(run)
        wake = [deadline, run.next_sweep, *([run.settle_at] if run.settle_at else [])]
        if run.phase is Phase.OPEN:
            wake += plan.reminders[run.reminders_sent :]
        sleep = min(wake) - workflow.now()
        if sleep > timedelta(0):
            at_once = plan.revoke is RevokeWhen.AT_ONCE
            with contextlib.suppress(TimeoutError):  # the next thing is due
                await workflow.wait_condition(
                    lambda: self._close_by is not None or (at_once and self._submitted), timeout=sleep
                )

    async def _deadline(self, run: CampaignRun) -> None:
        """The deadline passed, or an admin closed early: the default applies to what nobody decided."""
        plan = run.plan
        escalate = plan.default is DefaultDecision.ESCALATE and run.phase is Phase.OPEN and run.close_by is None
        if escalate:
            run.escalation_deadline = workflow.now() + plan.escalation_deadline
        if escalate:
            default = DefaultDecision.ESCALATE
        elif run.phase is Phase.OPEN and plan.default is not DefaultDecision.ESCALATE:
            default = plan.default
        else:
            default = DefaultDecision.KEEP  # an escalation run out, or closed early: what nobody decided is kept
        await self._act(
            names.APPLY_REVIEW_DEFAULT,
            DefaultInput(
                campaign_id=plan.campaign_id,
                default=default,
                escalation_deadline=run.escalation_deadline if escalate else None,
                closing_early=run.close_by,
            ),
            DefaultResult,
        )
        run.phase = Phase.ESCALATED if escalate else Phase.CLOSING

    async def _carry_out(self, run: CampaignRun, *, closing: bool) -> bool:
        """Carry out the submitted decisions (at close: every one), in batches; then the birthright sync, if a
        birthright grant became an exception."""
        campaign = run.plan.campaign_id
        after = run.act_after if closing else 0
        revokes = 0
        while True:
            batch: ActResult = await self._act(
                names.CARRY_OUT_REVIEW_BATCH,
                ActInput(campaign_id=campaign, after_id=after, limit=ACT_BATCH, closing=closing),
                ActResult,
                within=timedelta(minutes=10),
            )
            run.exceptions = run.exceptions or batch.exceptions > 0
            revokes += batch.revokes
            after = batch.last_id if batch.last_id is not None else after
            if closing:
                run.act_after = after
            if not batch.more:
                break
            if closing:
                self._continue_if_long(run)
        asked = run.exceptions or revokes > 0
        if run.exceptions:
            await self._act(names.TRIGGER_SYNC, TriggerInput(schedule_id=names.BIRTHRIGHT_SYNC), bool, beats=False)
            run.exceptions = False
        return asked

    async def _settle(self, run: CampaignRun) -> None:
        """Wait for the revokes asked for to be done, recording each one's proof; less often as time goes on."""
        run.settle_wait = timedelta(seconds=1)
        while True:
            result = await self._settle_once(run)
            if result.pending == 0:
                return
            if result.birthright_pending and result.settled == 0 and run.settle_wait >= SETTLE_WAIT_MAX:
                # A birthright exception still held after many looks: the sync may have been skipped; ask again.
                await self._act(names.TRIGGER_SYNC, TriggerInput(schedule_id=names.BIRTHRIGHT_SYNC), bool, beats=False)
            await workflow.sleep(run.settle_wait)
            run.settle_wait = min(run.settle_wait * 2, SETTLE_WAIT_MAX)
            self._continue_if_long(run)

    async def _settle_once(self, run: CampaignRun) -> SettleResult:
        result: SettleResult = await self._act(
            names.SETTLE_REVIEW_BATCH,
            SettleInput(campaign_id=run.plan.campaign_id, limit=SETTLE_BATCH),
            SettleResult,
            within=timedelta(minutes=10),
        )
        return result

    def _continue_if_long(self, run: CampaignRun) -> None:
        info = workflow.info()
        if info.get_current_history_length() >= HISTORY_EVENTS_BEFORE_CONTINUE or info.is_continue_as_new_suggested():
            run.submitted = self._submitted
            run.close_by = run.close_by or self._close_by
            workflow.continue_as_new(
                ReviewCampaignInput(definition=self._definition, campaign_id=run.plan.campaign_id, run=run)
            )

    async def _act(
        self,
        name: str,
        arg: object,
        result: type[Any] = type(None),
        *,
        within: timedelta | None = None,
        beats: bool = True,
    ) -> Any:
        """An activity of the campaign, by name (its module uses the app DB), retried until it succeeds; the
        campaign's own activities heartbeat (``beats``), so one lost with its worker is retried within seconds."""
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result,
            start_to_close_timeout=within or timedelta(minutes=2),
            heartbeat_timeout=HEARTBEAT_TIMEOUT if beats else None,
            retry_policy=RETRY,
        )

"""DirectorySyncWorkflow: joiners, movers and leavers from the identity source, on a schedule.

Leavers lose their access through each request's own workflow (so every request's history
stays true): a signal cancels a pending request or revokes a granted one, and another asks a
request whose open step named a leaver to resolve its approvers again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.requests import EndInput
    from access.syncs import (
        ApprovalToReresolve,
        DirectorySyncInput,
        DirectorySyncResult,
        LeaverWork,
        RequestToEnd,
        ReresolveInput,
        SyncInput,
        TriggerInput,
    )

from workflows.access_request import AccessRequestWorkflow

SYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1), maximum_attempts=3
)
"""A few tries for a busy directory; a failing sync ends visibly and the schedule runs it again."""
SIGNAL_BATCH = 50
"""Signals sent at once."""
SIGNALS_PER_RUN = 500
"""Then the run continues as new, handing on what is left: history stays small however many people leave."""


@workflow.defn
class DirectorySyncWorkflow:
    """Sync the directory, start the birthright sync, then act on leavers' requests."""

    @workflow.run
    async def run(self, input: DirectorySyncInput) -> DirectorySyncResult:
        if input.work is not None:  # a run continued as new: the sync is done, its signals are not
            await self._signal(input, input.work)
            return DirectorySyncResult(work=input.work)
        result: DirectorySyncResult = await workflow.execute_activity(
            names.SYNC_DIRECTORY,
            SyncInput(reason=input.reason),
            result_type=DirectorySyncResult,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=SYNC_RETRY,
        )
        # Leavers' birthright grants go, joiners' and movers' come: the birthright sync decides which. Started
        # after every run, not only when this attempt saw changes: a retried attempt finds the changes an
        # interrupted one already committed, and would otherwise leave them to the daily run.
        await workflow.execute_activity(
            names.TRIGGER_SYNC,
            TriggerInput(schedule_id=names.BIRTHRIGHT_SYNC),
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=SYNC_RETRY,
        )
        await self._signal(input, result.work)
        return result

    async def _signal(self, input: DirectorySyncInput, work: LeaverWork) -> None:
        ends, reresolves = list(work.end), list(work.reresolve)
        sent = 0
        while ends or reresolves:
            if sent >= SIGNALS_PER_RUN:
                rest = LeaverWork(end=ends, reresolve=reresolves, more=work.more)
                workflow.continue_as_new(DirectorySyncInput(reason=input.reason, work=rest))
            batch_ends, ends = ends[:SIGNAL_BATCH], ends[SIGNAL_BATCH:]
            room = SIGNAL_BATCH - len(batch_ends)
            batch_reresolves, reresolves = reresolves[:room], reresolves[room:]
            await asyncio.gather(
                *(self._end(request) for request in batch_ends),
                *(self._reresolve(request) for request in batch_reresolves),
            )
            sent += len(batch_ends) + len(batch_reresolves)

    async def _end(self, request: RequestToEnd) -> None:
        reason = f"{request.requester} left the organisation (directory sync)"
        handle = workflow.get_external_workflow_handle(names.request_workflow_id(request.id))
        try:
            await handle.signal(
                AccessRequestWorkflow.end_for_leaver, EndInput(actor="lapse", is_admin=True, comment=reason)
            )
        except FailureError as error:  # the run is gone (retention): nothing left to end
            workflow.logger.warning("could not end request %s: %s", request.id, error)

    async def _reresolve(self, request: ApprovalToReresolve) -> None:
        handle = workflow.get_external_workflow_handle(names.request_workflow_id(request.id))
        try:
            await handle.signal(AccessRequestWorkflow.reresolve_approvers, ReresolveInput(left=request.left))
        except FailureError as error:
            workflow.logger.warning("could not re-resolve the approvers of request %s: %s", request.id, error)

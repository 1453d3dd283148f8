"""The birthright sync: plan, apply in batches, record the outcome; run by its schedule or a trigger."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.syncs import (
        BirthrightBatchInput,
        BirthrightBatchResult,
        BirthrightFinishInput,
        BirthrightPlanned,
        BirthrightSyncInput,
        BirthrightSyncResult,
        SyncInput,
    )

BATCH_SIZE = 500
"""Items per apply activity."""
BATCHES_PER_RUN = 100
"""Apply batches before continuing as new: about 600 history events per run, whatever the plan's size."""

PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=3
)
APPLY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=names.BIRTHRIGHT_APPLY_ATTEMPTS,
)


@workflow.defn
class BirthrightSyncWorkflow:
    """Bring birthright grants in line with the policies and group memberships."""

    @workflow.run
    async def run(self, input: BirthrightSyncInput) -> BirthrightSyncResult:
        run = input.run
        try:
            if run is None:
                planned: BirthrightPlanned = await workflow.execute_activity(
                    names.PLAN_BIRTHRIGHT_SYNC,
                    SyncInput(reason=input.reason),
                    result_type=BirthrightPlanned,
                    start_to_close_timeout=timedelta(minutes=10),
                    retry_policy=PLAN_RETRY,
                )
                run = planned.run
            cursor = input.after_seq
            for _ in range(BATCHES_PER_RUN):
                batch: BirthrightBatchResult = await workflow.execute_activity(
                    names.APPLY_BIRTHRIGHT_BATCH,
                    BirthrightBatchInput(run=run, after_seq=cursor, limit=BATCH_SIZE),
                    result_type=BirthrightBatchResult,
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=timedelta(minutes=2),
                    retry_policy=APPLY_RETRY,
                )
                cursor = batch.last_seq if batch.last_seq is not None else cursor
                if not batch.more:
                    break
            else:
                workflow.continue_as_new(BirthrightSyncInput(reason=input.reason, run=run, after_seq=cursor))
        except ActivityError as error:
            cause = error.cause or error
            await self._finish(BirthrightFinishInput(run=run, error=str(cause)))
            raise
        return await self._finish(BirthrightFinishInput(run=run))

    async def _finish(self, input: BirthrightFinishInput) -> BirthrightSyncResult:
        result: BirthrightSyncResult = await workflow.execute_activity(
            names.FINISH_BIRTHRIGHT_SYNC,
            input,
            result_type=BirthrightSyncResult,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=PLAN_RETRY,
        )
        return result

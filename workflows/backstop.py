"""ExpiryBackstopWorkflow: revokes whatever JIT grant is past its end that its request's run will not.

Run every minute by its schedule (``expiry-backstop``), it reads the ledger, not any run's history,
so a grant's end does not depend on one workflow run (Invariant 7). Bounded: a few rounds of a few
dozen grants per run, continuing as new past that; a revoke that keeps failing is left for the next run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.grants import (
        BackstopInput,
        BackstopResult,
        FindOverdueInput,
        LedgerRevokeResult,
        OverdueFound,
        OverdueGrant,
    )

BATCH = 50
"""Grants looked at per round (each needs a describe of its run)."""
ROUNDS_PER_RUN = 5
"""Rounds before continuing as new: a few hundred history events per run, however many grants are overdue."""
MAX_ROUNDS = 200
"""A run and its continuations look at no more than this many rounds; the next scheduled run starts over."""
MAX_FAILING_LISTED = 20

FIND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=20), maximum_attempts=3
)
REVOKE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=3
)
"""A revoke still failing after these is left for the next run (a minute later), not retried here for ever."""


@workflow.defn
class ExpiryBackstopWorkflow:
    """Find overdue grants whose run is gone or stuck, revoke them, record the outcome."""

    @workflow.run
    async def run(self, input: BackstopInput) -> BackstopResult:
        result = BackstopResult(rounds=input.rounds)
        after = input.after_id
        try:
            for _ in range(ROUNDS_PER_RUN):
                found: OverdueFound = await workflow.execute_activity(
                    names.FIND_OVERDUE_GRANTS,
                    FindOverdueInput(grace=input.grace, after_id=after, limit=BATCH),
                    result_type=OverdueFound,
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=FIND_RETRY,
                )
                result.rounds += 1
                await asyncio.gather(*(self._revoke(grant, result) for grant in found.grants))
                if not found.more or found.last_id is None:
                    break
                after = found.last_id
            else:
                if result.rounds < MAX_ROUNDS:
                    workflow.continue_as_new(BackstopInput(grace=input.grace, after_id=after, rounds=result.rounds))
        except ActivityError as error:
            result.error = str(error.cause or error)
        await self._finish(result)
        return result

    async def _revoke(self, grant: OverdueGrant, result: BackstopResult) -> None:
        try:
            revoked: LedgerRevokeResult = await workflow.execute_activity(
                names.REVOKE_OVERDUE_GRANT,
                grant,
                result_type=LedgerRevokeResult,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=REVOKE_RETRY,
            )
        except ActivityError:
            if len(result.failing) < MAX_FAILING_LISTED:
                result.failing.append(grant.request_id)
            return
        result.revoked += 1
        result.still_held += int(revoked.still_held)

    async def _finish(self, result: BackstopResult) -> None:
        await workflow.execute_activity(
            names.FINISH_BACKSTOP,
            result,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=FIND_RETRY,
        )

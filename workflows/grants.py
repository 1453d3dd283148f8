"""GrantRevokeWorkflow: an admin ends a birthright or external grant from the permissions table.

A JIT grant is ended through its own request workflow instead, so that request's history stays true.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from access.types import LedgerRevokeInput, LedgerRevokeResult
    from workflows import names
    from workflows.access_request import REVOKE_FOREVER, REVOKE_PERMANENT_PAUSE


@workflow.defn
class GrantRevokeWorkflow:
    """Revoke until it succeeds: a revoke never gives up (a failing one shows as this run, still going)."""

    @workflow.run
    async def run(self, input: LedgerRevokeInput) -> LedgerRevokeResult:
        while True:
            try:
                result: LedgerRevokeResult = await workflow.execute_activity(
                    names.REVOKE_LEDGER_GRANT,
                    input,
                    result_type=LedgerRevokeResult,
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=REVOKE_FOREVER,
                )
                return result
            except ActivityError as error:
                if isinstance(error.cause, ApplicationError) and error.cause.type == "NotALedgerGrant":
                    raise  # not a ledger grant: nothing to retry
                await workflow.sleep(REVOKE_PERMANENT_PAUSE)

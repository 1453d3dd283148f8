"""GrantRevokeWorkflow: an admin ends a grant from the permissions table by its ledger row.

For birthright and external grants, and for a JIT grant whose request's run is gone (terminated at
Temporal's history limit, say): a JIT grant whose run is going is ended through that run instead, so
its history stays true. The activity checks the run itself and refuses (``RunAlive``) if it is going.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.grants import LedgerRevokeInput, LedgerRevokeResult
    from access.limits import HISTORY_EVENTS_BEFORE_CONTINUE
    from workflows.access_request import REVOKE_FOREVER, REVOKE_PERMANENT_PAUSE, TARGET_HEARTBEAT_TIMEOUT


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
                    heartbeat_timeout=TARGET_HEARTBEAT_TIMEOUT,  # lost with its worker: retried in seconds
                    retry_policy=REVOKE_FOREVER,
                )
                return result
            except ActivityError as error:
                if isinstance(error.cause, ApplicationError) and error.cause.type in ("NotALedgerGrant", "RunAlive"):
                    raise  # no such grant, or its run ends it: nothing to retry
                await workflow.sleep(REVOKE_PERMANENT_PAUSE)
                info = workflow.info()
                long = info.get_current_history_length() >= HISTORY_EVENTS_BEFORE_CONTINUE
                # A revoke failing for weeks hands on to a fresh run; runs from before this never do.
                if (long or info.is_continue_as_new_suggested()) and workflow.patched("continue-as-new"):
                    workflow.continue_as_new(input)

"""Workflows on whole integrations: discovery (run by a schedule, or now) and the connection test."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.discovery import ConnectionTestResult, DiscoveryResult, IntegrationInput, RemediateInput
    from access.syncs import TriggerInput

DISCOVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=3
)
"""A few tries for a busy target; a failing discovery ends visibly and the schedule runs it again."""
DRIFT_BATCH = 100


@workflow.defn
class DiscoveryWorkflow:
    """Bring the catalog and grants ledger in line with the target; revoke enforced drift; restore birthright."""

    @workflow.run
    async def run(self, input: IntegrationInput) -> DiscoveryResult:
        result: DiscoveryResult = await workflow.execute_activity(
            names.DISCOVER_INTEGRATION,
            input,
            result_type=DiscoveryResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=DISCOVERY_RETRY,
        )
        for start in range(0, len(result.drift), DRIFT_BATCH):
            batch = result.drift[start : start + DRIFT_BATCH]
            result.remediated += await workflow.execute_activity(
                names.REMEDIATE_DRIFT,
                RemediateInput(integration=input.integration, items=batch),
                result_type=int,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=DISCOVERY_RETRY,
            )
        # Birthright grants removed by hand come back now, not at the daily run. Runs from before this
        # step replay without it (no marker).
        if result.birthright_ended and workflow.patched("discovery-starts-birthright-sync"):
            await workflow.execute_activity(
                names.TRIGGER_SYNC,
                TriggerInput(schedule_id=names.BIRTHRIGHT_SYNC),
                result_type=bool,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DISCOVERY_RETRY,
            )
        return result


@workflow.defn
class ConnectionTestWorkflow:
    """Run the connection test on a worker: only workers hold the integrations' secrets."""

    @workflow.run
    async def run(self, input: IntegrationInput) -> ConnectionTestResult:
        result: ConnectionTestResult = await workflow.execute_activity(
            names.TEST_CONNECTION,
            input,
            result_type=ConnectionTestResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return result

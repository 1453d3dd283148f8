"""AuditCheckpointWorkflow: records the audit log's head (sequence number and MAC) in Temporal.

Run by its schedule (``audit-checkpoint``); its result is a checkpoint of the app DB's audit log kept
outside the app DB, which ``verify`` compares the log with, beside the head file in the data dir.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.checkpoint import AuditCheckpoint


@workflow.defn
class AuditCheckpointWorkflow:
    """One activity: read the head (never moving the checkpoint back), return it."""

    @workflow.run
    async def run(self) -> AuditCheckpoint:
        checkpoint: AuditCheckpoint = await workflow.execute_activity(
            names.CHECKPOINT_AUDIT_HEAD,
            result_type=AuditCheckpoint,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return checkpoint

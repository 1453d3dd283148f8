"""The audit log's checkpoint kept in Temporal: the head for each ``audit-checkpoint`` run, and the last one.

Each scheduled run reads the log's head; ``verify`` finds the last such run's result.

The head file in the data dir is one checkpoint outside the app DB; this is a second one, which survives
the loss of a host's disk and sits in a system the app DB's writers cannot edit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client

from access import names
from access.checkpoint import AuditCheckpoint
from activities.metrics_db import record_audit_check
from store.audit_log import chain_id
from store.db import session_scope
from store.tables import AuditEvent

WORKFLOW_TYPE = "AuditCheckpointWorkflow"


class AuditActivities:
    """Activities bound to one app DB."""

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url

    def all(self) -> list[Callable[..., Any]]:
        return [self.checkpoint_audit_head]

    @activity.defn(name=names.CHECKPOINT_AUDIT_HEAD)
    async def checkpoint_audit_head(self) -> AuditCheckpoint:
        """The log's head now, unless the log no longer reaches the previous checkpoint: then that one, kept."""
        previous = await latest_checkpoint(activity.client(), activity.info().task_queue)
        if previous is not None and previous.chain != chain_id(self._db_url):
            previous = None  # the queue moved to another app DB: start its own checkpoint
        checkpoint = await asyncio.to_thread(self._next, previous)
        await asyncio.to_thread(record_audit_check, self._db_url, checkpoint.kept)  # lapse_audit_chain_ok
        return checkpoint

    def _next(self, previous: AuditCheckpoint | None) -> AuditCheckpoint:
        chain = chain_id(self._db_url)
        with session_scope(self._db_url, write=False) as session:
            last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)).first()
            reached = session.get(AuditEvent, previous.seq) if previous and previous.seq else None
        if previous is not None and previous.seq:
            ends = last.id if last and last.id else 0
            if ends < previous.seq:
                return previous.model_copy(update={"kept": f"the log ends at {ends}, before this checkpoint"})
            if reached is None or reached.hash != previous.mac:
                return previous.model_copy(update={"kept": f"event {previous.seq} is no longer the one checkpointed"})
        if last is None:
            return AuditCheckpoint(chain=chain)
        return AuditCheckpoint(chain=chain, seq=last.id or 0, mac=last.hash, key_id=last.key_id, at=last.at.isoformat())


async def latest_checkpoint(client: Client, task_queue: str) -> AuditCheckpoint | None:
    """The result of the last completed ``audit-checkpoint`` run on ``task_queue`` (its ``chain`` says which
    app DB it is of)."""
    queue = task_queue.replace("\\", "\\\\").replace('"', '\\"')
    query = f'WorkflowType="{WORKFLOW_TYPE}" AND TaskQueue="{queue}" AND ExecutionStatus="Completed"'
    latest = None
    async for execution in client.list_workflows(query, limit=20):
        if execution.close_time is None:
            continue
        if latest is None or latest.close_time is None or execution.close_time > latest.close_time:
            latest = execution
    if latest is None:
        return None
    handle = client.get_workflow_handle(latest.id, run_id=latest.run_id, result_type=AuditCheckpoint)
    checkpoint: AuditCheckpoint = await handle.result(follow_runs=False)
    return checkpoint

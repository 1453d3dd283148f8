"""The scheduled syncs: their schedules, created at start and triggered on changes, and their last runs.

The directory and birthright syncs, with the expiry backstop and the audit checkpoint beside them. A
trigger goes through the schedule, whose overlap policy keeps one run going and at most one waiting,
so a burst of policy edits never piles up runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.grants import BackstopInput
from access.syncs import SyncInput
from store.db import session_scope
from store.settings import Settings
from store.tables import SyncState

SYNCS: dict[str, str] = {
    names.DIRECTORY_SYNC: "DirectorySyncWorkflow",
    names.BIRTHRIGHT_SYNC: "BirthrightSyncWorkflow",
    names.EXPIRY_BACKSTOP: "ExpiryBackstopWorkflow",
    names.AUDIT_CHECKPOINT: "AuditCheckpointWorkflow",
}
"""Schedule id → the workflow type it runs (the expiry backstop and the audit checkpoint are scheduled beside
the syncs)."""


class SyncStateOut(BaseModel):
    """A sync's last run, as ``GET /api/directory/sync`` and ``GET /api/birthright/sync`` show it."""

    name: str
    started_at: datetime | None
    """When the last run started; ``null`` if none has yet."""
    finished_at: datetime | None
    """``null`` while a run is going."""
    summary: dict[str, Any]
    """What the last run found and did (counts, and for the directory the joiners, movers and leavers)."""
    error: str | None
    """Why the last run failed; ``null`` once one succeeds."""

    @classmethod
    def of(cls, state: SyncState | None, name: str) -> SyncStateOut:
        return cls.model_validate(state or SyncState(name=name), from_attributes=True)


def sync_state(settings: Settings, name: str) -> SyncStateOut:
    """How the sync ``name`` (a schedule id) last ran."""
    with session_scope(settings.db_url, write=False) as session:
        return SyncStateOut.of(session.get(SyncState, name), name)


def _schedule(settings: Settings, schedule_id: str) -> Schedule:
    if schedule_id == names.EXPIRY_BACKSTOP:
        return _backstop_schedule(settings)
    if schedule_id == names.AUDIT_CHECKPOINT:
        return _audit_checkpoint_schedule(settings)
    directory = schedule_id == names.DIRECTORY_SYNC
    every = settings.directory_sync_every if directory else settings.birthright_sync_every
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SYNCS[schedule_id],
            SyncInput(),
            id=schedule_id,
            task_queue=settings.task_queue,
            # A run that cannot finish (no worker on its queue) must not hold up every later trigger; per run,
            # since a large birthright sync continues as new many times.
            run_timeout=timedelta(minutes=30) if directory else timedelta(hours=1),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )


def _backstop_schedule(settings: Settings) -> Schedule:
    """The expiry backstop: every ``backstop_every``, one run at a time and at most one waiting."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SYNCS[names.EXPIRY_BACKSTOP],
            BackstopInput(grace=settings.backstop_grace),
            id=names.EXPIRY_BACKSTOP,
            task_queue=settings.task_queue,
            run_timeout=timedelta(minutes=10),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.backstop_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )


def _audit_checkpoint_schedule(settings: Settings) -> Schedule:
    """The audit log's head recorded in Temporal every ``audit_checkpoint_every`` (see workflows.audit)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SYNCS[names.AUDIT_CHECKPOINT],
            id=names.AUDIT_CHECKPOINT,
            task_queue=settings.task_queue,
            run_timeout=timedelta(minutes=5),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.audit_checkpoint_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def upsert_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the schedule, or bring an existing one to ``schedule`` — keeping its state, so one an
    operator paused in the Web UI stays paused."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(input: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = input.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)


async def ensure_sync_schedules(client: Client, settings: Settings) -> list[str]:
    """Create the sync schedules, or bring existing ones to the current settings; returns their ids."""
    for schedule_id in SYNCS:
        await upsert_schedule(client, schedule_id, _schedule(settings, schedule_id))
    return list(SYNCS)


async def trigger_now(client: Client, settings: Settings, schedule_id: str) -> None:
    """Run a sync now; if its schedule is missing (a stack started before it existed), make the schedules
    first. Raises ``RPCError`` when Temporal cannot be reached."""
    try:
        await trigger_sync(client, schedule_id)
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        await ensure_sync_schedules(client, settings)
        await trigger_sync(client, schedule_id)


async def next_run(client: Client, schedule_id: str) -> datetime | None:
    """When the schedule runs next; None if it is paused, missing, or Temporal cannot be reached (a page that
    shows it still shows the rest)."""
    try:
        description = await client.get_schedule_handle(schedule_id).describe()
    except RPCError:
        return None
    if description.schedule.state.paused:
        return None
    return min(description.info.next_action_times, default=None)


async def trigger_sync(client: Client, schedule_id: str) -> None:
    """Run the sync now, through its schedule: one run at a time, at most one more buffered."""
    await client.get_schedule_handle(schedule_id).trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)

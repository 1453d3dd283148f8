"""Discovery schedules, discovery now, and connection tests: what the API starts for integrations.

Connectors run on workers only (they hold the secrets), so even a connection test is a
short workflow the API waits for.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from sqlmodel import select
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
from temporalio.common import WorkflowIDConflictPolicy

from access.db import session_scope
from access.settings import Settings
from access.tables import Integration
from access.types import ConnectionTestResult, DiscoveryResult, IntegrationInput
from activities.connectors import BUILT_IN
from workflows import names
from workflows.discovery import ConnectionTestWorkflow, DiscoveryWorkflow

log = logging.getLogger(__name__)


def discovers(integration: Integration) -> bool:
    """Whether the integration's kind has a target to discover (the ledger has not)."""
    factory = BUILT_IN.get(integration.kind)
    if factory is None:
        return False
    try:
        return factory(integration.config).discovers
    except ValueError:
        return False  # misconfigured: its requests and connection test say why


def _schedule(settings: Settings, integration: Integration) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DiscoveryWorkflow.run,
            IntegrationInput(integration=integration.name),
            id=names.discovery_id(integration.name),
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=integration.discovery_interval_s))]),
        # One run at a time, at most one waiting: triggers never pile up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )


async def ensure_discovery_schedule(client: Client, settings: Settings, integration: Integration) -> None:
    """Create the integration's discovery schedule, or bring an existing one to its current interval."""
    schedule = _schedule(settings, integration)
    try:
        await client.create_schedule(names.discovery_id(integration.name), schedule)
    except ScheduleAlreadyRunningError:

        def update(_input: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(names.discovery_id(integration.name)).update(update)


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Every discovering integration's schedule, created idempotently; returns their ids."""
    with session_scope(settings.db_url, write=False) as session:
        integrations = [i for i in session.exec(select(Integration)) if discovers(i)]
    for integration in integrations:
        await ensure_discovery_schedule(client, settings, integration)
    return [names.discovery_id(i.name) for i in integrations]


async def check_connection(client: Client, settings: Settings, name: str) -> ConnectionTestResult:
    return await client.execute_workflow(
        ConnectionTestWorkflow.run,
        IntegrationInput(integration=name),
        id=f"connection-test-{name}-{secrets.token_hex(4)}",
        task_queue=settings.task_queue,
        execution_timeout=timedelta(seconds=90),
    )


async def discover_now(client: Client, settings: Settings, name: str) -> DiscoveryResult:
    """Run discovery now and wait for it; joins a run already started by hand rather than adding one."""
    handle = await client.start_workflow(
        DiscoveryWorkflow.run,
        IntegrationInput(integration=name),
        id=names.discovery_id(name),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await handle.result()

"""Discovery schedules, discovery now, and connection tests: the workflows an integration runs.

Connectors run on workers only (they hold the secrets), so even a connection test is a
short workflow the service waits for.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

from sqlmodel import select
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TimeoutError as TimeoutErrorFailure

from access import names
from access.discovery import ConnectionTestResult, DiscoveryResult, IntegrationInput
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from activities.connectors import built
from starter.services.syncs import upsert_schedule
from store.db import session_scope
from store.settings import Settings
from store.tables import Integration
from workflows.discovery import ConnectionTestWorkflow, DiscoveryWorkflow


def discovers(integration: Integration) -> bool:
    """Whether the integration's kind has a target to discover (the ledger has not); a misconfigured one
    has not either, until fixed (its requests and connection test say why)."""
    connector = built(integration.kind, integration.config)
    return connector is not None and connector.discovers


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
    await upsert_schedule(client, names.discovery_id(integration.name), _schedule(settings, integration))


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Every discovering integration's schedule, created idempotently; returns their ids."""
    with session_scope(settings.db_url, write=False) as session:
        integrations = [i for i in session.exec(select(Integration)) if discovers(i)]
    for integration in integrations:
        await ensure_discovery_schedule(client, settings, integration)
    return [names.discovery_id(i.name) for i in integrations]


async def check_connection(client: Client, settings: Settings, name: str) -> ConnectionTestResult:
    """Run the connection test on a worker; unavailable if none answers within ``submit_timeout``."""
    try:
        return await client.execute_workflow(
            ConnectionTestWorkflow.run,
            IntegrationInput(integration=name),
            id=f"connection-test-{name}-{secrets.token_hex(4)}",
            task_queue=settings.task_queue,
            execution_timeout=settings.submit_timeout,
        )
    except WorkflowFailureError as error:
        if isinstance(error.cause, TimeoutError | TimeoutErrorFailure):
            raise Refusal(
                RefusalKind.UNAVAILABLE, f"no worker ran the connection test of {name} within the time allowed"
            ) from error
        raise


async def discover_now(client: Client, settings: Settings, name: str) -> DiscoveryResult:
    """Run discovery now and wait for it; joins a run already started by hand rather than adding one.

    Unavailable when it does not finish within ``submit_timeout``; the target's failure when it fails.
    """
    handle = await client.start_workflow(
        DiscoveryWorkflow.run,
        IntegrationInput(integration=name),
        id=names.discovery_id(name),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    try:
        return await asyncio.wait_for(handle.result(), timeout=settings.submit_timeout.total_seconds())
    except TimeoutError:
        raise Refusal(
            RefusalKind.UNAVAILABLE,
            f"discovery of {name} did not finish within {format_duration(settings.submit_timeout)}: no worker may "
            "be running, or the target is slow. It goes on; its outcome shows on the integration.",
        ) from None
    except WorkflowFailureError as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = cause.__cause__
        reason = cause.message if isinstance(cause, ApplicationError) else str(error)
        raise Refusal(RefusalKind.TARGET_FAILED, f"discovery of {name} failed: {reason}") from None

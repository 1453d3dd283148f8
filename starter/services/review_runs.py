"""Review campaigns, the Temporal side: start one, schedule a recurring definition, and tell a running one
that decisions were submitted or that an admin closes it.

The definitions' own service (``starter.services.reviews``) checks who calls; these functions only talk to
Temporal. A campaign's workflow is ``review-<campaign>``; a recurring definition's schedule ``review-<name>``
sits beside the sync schedules (``temporal schedule list``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlmodel import select
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WithStartWorkflowOperation,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.review_runs import CloseNowInput, OpenedCampaign, ReviewCampaignInput
from access.reviews import CampaignState, ReviewDefinition
from starter.services.syncs import upsert_schedule
from store.db import session_scope
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewDefinitionRow
from workflows.review import ReviewCampaignWorkflow

ENDED = (CampaignState.CLOSED.value, CampaignState.EMPTY.value)


def _definition_exists(settings: Settings, name: str) -> bool:
    with session_scope(settings.db_url, write=False) as session:
        return session.exec(select(ReviewDefinitionRow.id).where(ReviewDefinitionRow.name == name)).first() is not None


async def start_campaign(client: Client, settings: Settings, definition_name: str, *, started_by: str) -> str:
    """Start a campaign of the definition now; returns its id once its items are snapshotted (an empty scope
    gives a campaign in state ``empty`` with no items). The workflow audits ``review.started`` (or
    ``review.empty``) with ``started_by``."""
    if not await asyncio.to_thread(_definition_exists, settings, definition_name):
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no review definition {definition_name!r}", field="name")
    campaign_id = names.review_campaign_id(definition_name, datetime.now(UTC))
    start = WithStartWorkflowOperation(
        ReviewCampaignWorkflow.run,
        ReviewCampaignInput(definition=definition_name, started_by=started_by, campaign_id=campaign_id),
        id=names.review_workflow_id(campaign_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        static_summary=f"access review {campaign_id}, started by {started_by}",
    )
    try:
        opened: OpenedCampaign = await client.execute_update_with_start_workflow(
            ReviewCampaignWorkflow.opened, start_workflow_operation=start, rpc_timeout=settings.submit_timeout
        )
    except WorkflowAlreadyStartedError:
        raise Refusal(
            RefusalKind.CONFLICT, f"campaign {campaign_id} was started a moment ago: wait a second", retry_after=1
        ) from None
    except RPCError as error:
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise Refusal(
                RefusalKind.UNAVAILABLE,
                f"campaign {campaign_id} was started but its snapshot was not taken within "
                f"{format_duration(settings.submit_timeout)}; it opens once a worker takes it",
                extra={"id": campaign_id},
            ) from None
        raise
    del opened  # its state and counts are in the campaign's row
    return campaign_id


def _schedule(settings: Settings, definition: ReviewDefinition) -> Schedule:
    assert definition.schedule is not None
    every = definition.schedule.every
    spec = (
        ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])
        if every is not None
        else ScheduleSpec(cron_expressions=[definition.schedule.cron or ""])
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReviewCampaignWorkflow.run,
            ReviewCampaignInput(definition=definition.name),
            id=names.review_schedule_id(definition.name),
            task_queue=settings.task_queue,
        ),
        spec=spec,
        # One campaign of a definition at a time: a run due while the last is still open is skipped.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def upsert_review_schedule(client: Client, settings: Settings, definition: ReviewDefinition) -> None:
    """Create or update the definition's schedule ``review-<name>``; a one-off definition has none (an
    existing one is deleted)."""
    if definition.schedule is None:
        await delete_review_schedule(client, settings, definition.name)
        return
    await upsert_schedule(client, names.review_schedule_id(definition.name), _schedule(settings, definition))


async def delete_review_schedule(client: Client, settings: Settings, name: str) -> None:
    """Delete the definition's schedule, if it has one (its open campaigns run on)."""
    try:
        await client.get_schedule_handle(names.review_schedule_id(name)).delete()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise


def _campaign_state(settings: Settings, campaign_id: str) -> str | None:
    with session_scope(settings.db_url, write=False) as session:
        campaign = session.get(ReviewCampaign, campaign_id)
        return campaign.state if campaign is not None else None


async def submitted(client: Client, settings: Settings, campaign_id: str) -> None:
    """Tell the campaign's workflow that decisions were submitted (under ``revoke: at_once`` it carries out
    their revokes now; otherwise at close). A campaign whose run is over has nothing to be told."""
    try:
        await client.get_workflow_handle(names.review_workflow_id(campaign_id)).signal(ReviewCampaignWorkflow.submitted)
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise


async def close_now(client: Client, settings: Settings, campaign_id: str, *, by: str) -> None:
    """Close the campaign early (an admin, ``by``): the workflow applies the defaults at once, carries out
    every decision and closes, auditing ``review.closed``."""
    state = await asyncio.to_thread(_campaign_state, settings, campaign_id)
    if state is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no campaign {campaign_id!r}", field="campaign_id")
    if state in ENDED:
        raise Refusal(RefusalKind.CONFLICT, f"campaign {campaign_id} is {state} already", field="campaign_id")
    try:
        await client.get_workflow_handle(names.review_workflow_id(campaign_id)).signal(
            ReviewCampaignWorkflow.close_now, CloseNowInput(by=by)
        )
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        raise Refusal(
            RefusalKind.CONFLICT, f"campaign {campaign_id} has no running workflow", field="campaign_id"
        ) from None

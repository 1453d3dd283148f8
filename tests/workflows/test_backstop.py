"""The expiry backstop and the admin's revoke by ledger row: a grant's end does not depend on its run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from access import names
from access.grants import BackstopInput, BackstopResult
from starter.services.syncs import ensure_sync_schedules, trigger_sync
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, SyncState
from tests.conftest import Api, FakeTarget, clear_sync_schedules
from tests.support import eventually
from workflows.backstop import ExpiryBackstopWorkflow

READ = "ledger/prod-db/read"  # read-only: up to 1h automatic
KATHERINE = "katherine@example.com"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"backstop_grace": timedelta(seconds=1)}


async def _terminate(env: WorkflowEnvironment, request_id: str) -> None:
    """What Temporal does to a run whose history passed its limit."""
    await env.client.get_workflow_handle(names.request_workflow_id(request_id)).terminate("history size exceeds limit")


async def _past(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.2)


async def _backstop(env: WorkflowEnvironment, settings: Settings) -> BackstopResult:
    """One run, as the schedule starts it (the test server's schedules do not skip time)."""
    result: BackstopResult = await env.client.execute_workflow(
        ExpiryBackstopWorkflow.run,
        BackstopInput(grace=settings.backstop_grace),
        id=f"{names.EXPIRY_BACKSTOP}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
    )
    return result


def _grant(settings: Settings, request_id: str) -> Grant:
    with session_scope(settings.db_url, write=False) as session:
        grant = session.exec(select(Grant).where(Grant.request_id == request_id)).one()
    return grant


async def test_f1_grant_whose_run_was_terminated_is_revoked_by_backstop(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    created = await api.request(KATHERINE, READ, "PT2S", "")
    active = await api.wait_for(created["id"], "active")
    await _terminate(env, created["id"])
    await _past(datetime.fromisoformat(active["expires_at"]) + settings.backstop_grace)
    assert (KATHERINE, READ) in target.held  # nothing else revokes it

    result = await _backstop(env, settings)

    assert (result.revoked, result.failing) == (1, [])
    assert (KATHERINE, READ) not in target.held
    grant = _grant(settings, created["id"])
    assert not grant.active and grant.ended_at is not None
    events = [e for e in audit(names.request_workflow_id(created["id"])) if e.action == "grant.revoked_by_backstop"]
    assert len(events) == 1 and "terminated" in events[0].reason
    status = await api.status(created["id"])
    assert (status["state"], status["ended_by"]) == ("expired", "lapse")
    assert "expiry backstop" in status["end_reason"]

    again = await _backstop(env, settings)  # nothing left to do, nothing done twice
    assert again.revoked == 0 and [c[0] for c in target.calls] == ["grant", "revoke"]


async def test_backstop_keeps_access_an_overlapping_grant_still_covers(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    short = await api.request(KATHERINE, READ, "PT2S", "")
    long = await api.request(KATHERINE, READ, "PT30M", "")
    short_active = await api.wait_for(short["id"], "active")
    await api.wait_for(long["id"], "active")
    await _terminate(env, short["id"])
    await _past(datetime.fromisoformat(short_active["expires_at"]) + settings.backstop_grace)

    result = await _backstop(env, settings)

    assert (result.revoked, result.still_held) == (1, 1)
    assert not _grant(settings, short["id"]).active
    assert _grant(settings, long["id"]).active  # its run is going and its time is not up: untouched
    assert (KATHERINE, READ) in target.held
    assert [c[0] for c in target.calls] == ["grant"]  # the target was never asked to revoke
    [event] = [e for e in audit(names.request_workflow_id(short["id"])) if e.action == "grant.revoked_by_backstop"]
    assert event.details["still_held"] is True


async def test_a_failing_backstop_revoke_is_visible_and_tried_again(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    created = await api.request(KATHERINE, READ, "PT2S", "")
    active = await api.wait_for(created["id"], "active")
    await _terminate(env, created["id"])
    await _past(datetime.fromisoformat(active["expires_at"]) + settings.backstop_grace)
    target.revoke_failures = 6  # two runs' worth of attempts

    for _ in range(2):
        result = await _backstop(env, settings)
        assert (result.revoked, result.failing) == (0, [created["id"]])
    status = await api.status(created["id"])
    assert status["state"] == "revoking" and "unreachable" in status["revoke_error"]
    actions = [e.action for e in audit(names.request_workflow_id(created["id"]))]
    assert actions.count("grant.backstop_revoke_failing") == 1  # visible once, not every minute
    assert (KATHERINE, READ) in target.held

    result = await _backstop(env, settings)
    assert (result.revoked, result.failing) == (1, [])
    assert (KATHERINE, READ) not in target.held
    status = await api.status(created["id"])
    assert (status["state"], status["revoke_error"]) == ("expired", None)


async def test_admin_revoke_works_when_run_is_gone(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    created = await api.request(KATHERINE, READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    await _terminate(env, created["id"])
    grant_id = _grant(settings, created["id"]).id

    revoked = await api.ok("ada@example.com", "POST", f"/api/grants/{grant_id}/revoke", {"comment": "run lost"})

    assert revoked["request"]["state"] == "revoked"
    assert (revoked["request"]["ended_by"], revoked["request"]["end_reason"]) == ("ada@example.com", "run lost")
    assert (KATHERINE, READ) not in target.held
    assert not _grant(settings, created["id"]).active
    assert (await api.status(created["id"]))["state"] == "revoked"
    [event] = [e for e in audit(names.request_workflow_id(created["id"])) if e.action == "grant.revoked"]
    assert event.actor == "ada@example.com" and "terminated" in event.reason
    again = await api.call("ada@example.com", "POST", f"/api/grants/{grant_id}/revoke", {})
    assert again.status_code == 409


async def test_f1_requester_gives_back_a_grant_whose_run_is_gone(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget
) -> None:
    created = await api.request(KATHERINE, READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    await _terminate(env, created["id"])

    stranger = await api.call("ken@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert stranger.status_code == 403
    revoked = await api.ok(KATHERINE, "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"})

    assert revoked["state"] == "revoked"
    assert (KATHERINE, READ) not in target.held
    assert not _grant(settings, created["id"]).active


async def test_backstop_is_scheduled_beside_the_syncs_and_records_its_runs(
    api: Api, env: WorkflowEnvironment, settings: Settings
) -> None:
    await clear_sync_schedules(env.client)
    try:
        await ensure_sync_schedules(env.client, settings)
        schedule = (await env.client.get_schedule_handle(names.EXPIRY_BACKSTOP).describe()).schedule
        assert isinstance(schedule.action, ScheduleActionStartWorkflow)
        assert schedule.action.workflow == "ExpiryBackstopWorkflow"
        assert [i.every for i in schedule.spec.intervals] == [settings.backstop_every] == [timedelta(minutes=1)]
        assert schedule.policy.overlap is ScheduleOverlapPolicy.BUFFER_ONE

        await trigger_sync(env.client, names.EXPIRY_BACKSTOP)

        def backstop_state() -> SyncState | None:
            with session_scope(settings.db_url, write=False) as session:
                return session.get(SyncState, names.EXPIRY_BACKSTOP)

        state = await eventually(
            backstop_state,
            until=lambda state: state is not None and state.finished_at is not None,
            what="the scheduled backstop run to finish",
        )
        assert state is not None and state.error is None
        assert (state.summary["revoked"], state.summary["failing"]) == (0, [])
    finally:
        await clear_sync_schedules(env.client)

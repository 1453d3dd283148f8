"""Every API replica makes the schedules as it starts: several starting at once make each schedule and none fails,
and a replica started with new settings brings the schedules to them (a paused one stays paused)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import ScheduleIntervalSpec
from temporalio.testing import WorkflowEnvironment

from access import names
from starter.services.syncs import SYNCS, ensure_sync_schedules
from store.settings import Settings
from tests.conftest import clear_sync_schedules


@pytest.fixture
async def schedules(env: WorkflowEnvironment) -> AsyncIterator[None]:
    await clear_sync_schedules(env.client)
    yield
    await clear_sync_schedules(env.client)


async def _every(env: WorkflowEnvironment, schedule_id: str) -> timedelta:
    description = await env.client.get_schedule_handle(schedule_id).describe()
    interval = description.schedule.spec.intervals[0]
    assert isinstance(interval, ScheduleIntervalSpec)
    return interval.every


async def test_replicas_starting_at_once_make_each_schedule_once(
    env: WorkflowEnvironment, settings: Settings, schedules: None
) -> None:
    made = await asyncio.gather(*(ensure_sync_schedules(env.client, settings) for _ in range(4)))
    assert all(ids == list(SYNCS) for ids in made)
    for schedule_id in SYNCS:  # a schedule's id is unique in the namespace: each exists, so it exists once
        assert await _every(env, schedule_id) > timedelta(0)

    await env.client.get_schedule_handle(names.BIRTHRIGHT_SYNC).pause(note="an operator paused it")
    changed = settings.model_copy(update={"directory_sync_every": timedelta(minutes=5)})
    await asyncio.gather(ensure_sync_schedules(env.client, changed), ensure_sync_schedules(env.client, changed))
    assert await _every(env, names.DIRECTORY_SYNC) == timedelta(minutes=5)
    assert (await env.client.get_schedule_handle(names.BIRTHRIGHT_SYNC).describe()).schedule.state.paused

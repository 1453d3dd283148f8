"""Reminders and escalation as durable timers of a request's run (no expiring-soon timer: a scan gives that), on
the time-skipping server: hours of waiting in a moment. The times asserted are the workflow clock's, which the
server moves exactly to each timer; a minute's slack covers the real time a test step takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from access.requests import RequestState, StepState
from access.syncs import ReresolveInput
from access.types import AuditEntry
from tests.workflows.timer_support import (
    FALLBACK,
    MANAGER,
    REQUESTER,
    SECURITY,
    Requests,
    decide,
    extend,
    extended_near_its_end,
    plan,
    reminded_then_escalated,
    requests,
    step,
)
from workflows.access_request import AccessRequestWorkflow

SLACK = timedelta(minutes=1)


@pytest_asyncio.fixture
async def lapse(time_skipping: WorkflowEnvironment) -> AsyncIterator[Requests]:
    async with requests(time_skipping) as running:
        yield running


def _at(event: AuditEntry) -> datetime:
    assert event.at is not None
    return event.at


def _near(moment: datetime, expected: datetime) -> bool:
    return expected <= moment <= expected + SLACK


async def test_reminders_come_after_remind_after_then_every_remind_every_until_decided(lapse: Requests) -> None:
    handle = await lapse.start(plan(step(remind_after=timedelta(hours=1), remind_every=timedelta(hours=4))))
    opened = (await lapse.status(handle, lambda s: s.steps[0].opened_at is not None)).steps[0].opened_at
    assert opened is not None

    await lapse.env.sleep(timedelta(hours=1, minutes=5))
    first = await lapse.status(handle, lambda s: s.steps[0].reminders == 1)
    assert first.steps[0].next_reminder_at is not None
    assert _near(first.steps[0].next_reminder_at, opened + timedelta(hours=5))

    await lapse.env.sleep(timedelta(hours=8))  # 9h05 open: reminded at 1h, 5h and 9h
    await lapse.status(handle, lambda s: s.steps[0].reminders == 3)
    await decide(handle, MANAGER)
    decided = await lapse.status(handle, lambda s: s.state is RequestState.ACTIVE)
    assert decided.steps[0].next_reminder_at is None  # a decided step is reminded no more

    await lapse.env.sleep(timedelta(hours=5))
    reminders = lapse.stubs.events("step.reminded")
    assert [e.details["reminder"] for e in reminders] == [1, 2, 3]
    expected = [opened + timedelta(hours=h) for h in (1, 5, 9)]
    assert all(_near(_at(e), when) for e, when in zip(reminders, expected, strict=True)), reminders
    assert {e.details["step"] for e in reminders} == {"manager"}


async def test_an_escalated_approver_can_approve_and_not_before_the_escalation(lapse: Requests) -> None:
    timers = step(escalate_after=timedelta(hours=8), escalate_to=[SECURITY])
    handle = await lapse.start(plan(timers))
    pending = await lapse.status(handle, lambda s: s.steps[0].escalate_at is not None)
    opened = pending.steps[0].opened_at
    assert opened is not None and pending.steps[0].escalate_at == opened + timedelta(hours=8)

    with pytest.raises(WorkflowUpdateFailedError):
        await decide(handle, FALLBACK)  # not eligible yet

    await lapse.env.sleep(timedelta(hours=8, minutes=5))
    escalated = await lapse.status(handle, lambda s: s.steps[0].escalated_at is not None)
    # The requester is in the group escalated to, and is never added: nobody decides their own request.
    assert escalated.steps[0].eligible == [MANAGER, FALLBACK]
    [event] = lapse.stubs.events("step.escalated")
    assert event.details["added"] == [FALLBACK] and _near(_at(event), opened + timedelta(hours=8))
    assert REQUESTER not in escalated.steps[0].eligible

    await decide(handle, FALLBACK)
    active = await lapse.status(handle, lambda s: s.state is RequestState.ACTIVE)
    assert [d.approver for d in active.steps[0].decisions] == [FALLBACK]


async def test_the_step_timeout_still_times_the_request_out_after_its_reminders_and_escalation(
    lapse: Requests,
) -> None:
    timers = step(
        remind_after=timedelta(hours=1),
        remind_every=timedelta(hours=4),
        escalate_after=timedelta(hours=8),
        escalate_to=[SECURITY],
    )
    handle = await lapse.start(plan(timers))

    ended = await handle.result()  # the day's timeout, skipped

    assert ended.state is RequestState.TIMED_OUT
    assert ended.steps[0].state is StepState.EXPIRED
    assert ended.steps[0].reminders == 6  # 1h, 5h, 9h, 13h, 17h, 21h: none at the timeout itself
    assert len(lapse.stubs.events("step.escalated")) == 1
    [timed_out] = lapse.stubs.events("request.timed_out")
    assert ended.steps[0].opened_at is not None
    assert _near(_at(timed_out), ended.steps[0].opened_at + timedelta(hours=24))


async def test_an_extensions_step_is_reminded_too(lapse: Requests) -> None:
    handle = await lapse.start(plan(), duration=timedelta(hours=8))
    await lapse.status(handle, lambda s: s.state is RequestState.ACTIVE)

    await extend(handle, timedelta(hours=2), plan(step(remind_after=timedelta(minutes=30))))
    await lapse.env.sleep(timedelta(minutes=35))
    reminded = await lapse.status(handle, lambda s: s.extensions[0].steps[0].reminders == 1)

    assert reminded.steps == []  # the request itself needed no approval
    [event] = lapse.stubs.events("step.reminded")
    requested = reminded.extensions[0].requested_at
    assert _near(_at(event), requested + timedelta(minutes=30))


async def test_a_grants_run_times_no_expiry_warning_the_scan_gives_it(lapse: Requests) -> None:
    handle = await lapse.start(plan(), duration=timedelta(hours=8))

    ended = await handle.result()

    # Ten thousand grants ending together would be ten thousand timers and bookkeeping writes as their revokes
    # run: the warning is the grants ledger scan's (tests/notify/test_expiry_scan.py), the run keeps its end.
    assert ended.state is RequestState.EXPIRED and ended.warned_for is None
    assert lapse.stubs.events("grant.expiring_soon") == []
    timers, markers = await _timers_and_warning_markers(handle)
    assert timers == 1 and [b"expiry-warning-by-scan" in m for m in markers] == [True]


async def test_an_extension_near_the_end_is_reminded_and_moves_the_end(lapse: Requests) -> None:
    handle = await extended_near_its_end(lapse.env, lapse)

    ended = await handle.result()

    assert ended.granted_at is not None and ended.expires_at == ended.granted_at + timedelta(hours=3)
    assert lapse.stubs.events("grant.expiring_soon") == []
    [reminded] = lapse.stubs.events("step.reminded")
    assert _near(_at(reminded), ended.granted_at + timedelta(minutes=57))


async def test_a_grant_under_ten_minutes_is_not_warned_and_adds_no_command(lapse: Requests) -> None:
    handle = await lapse.start(plan(), duration=timedelta(minutes=9))

    ended = await handle.result()

    assert ended.state is RequestState.EXPIRED and ended.warned_for is None
    assert lapse.stubs.events("grant.expiring_soon") == []
    # One timer (the grant's end), and no patch marker: a short grant and a step without reminders cost nothing.
    assert await _timers_and_warning_markers(handle) == (1, [])


async def _timers_and_warning_markers(handle: WorkflowHandle[Any, Any]) -> tuple[int, list[bytes]]:
    """How many timers the run started, and its expiry-warning patch markers."""
    history = await handle.fetch_history()
    timers = sum(1 for event in history.events if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED)
    markers = [e.marker_recorded_event_attributes.SerializeToString() for e in history.events]
    return timers, [marker for marker in markers if b"expiry-warning" in marker]


async def test_the_recorded_escalation_scenario_runs(lapse: Requests) -> None:
    handle = await reminded_then_escalated(lapse.env, lapse)
    ended = await handle.result()
    assert ended.steps[0].decisions[0].approver == FALLBACK and ended.steps[0].reminders == 3


async def test_those_escalated_to_stay_eligible_when_the_directory_resolves_the_step_again(lapse: Requests) -> None:
    handle = await lapse.start(plan(step(escalate_after=timedelta(hours=1), escalate_to=[SECURITY])))
    await lapse.env.sleep(timedelta(hours=1, minutes=5))
    await lapse.status(handle, lambda s: s.steps[0].escalated_at is not None)

    await handle.signal(AccessRequestWorkflow.reresolve_approvers, ReresolveInput(left=[]))
    await decide(handle, FALLBACK)  # still eligible: the step names security now too

    active = await lapse.status(handle, lambda s: s.state is RequestState.ACTIVE)
    assert active.steps[0].eligible == [MANAGER, FALLBACK]
    assert lapse.stubs.events("step.reresolved") == []  # nobody changed

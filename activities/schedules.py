"""Run a scheduled sync now, through its schedule, when another workflow asks for it.

A discovery or a directory sync that changed what birthright access follows from asks for the
birthright sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode

from access import names
from access.syncs import TriggerInput

log = logging.getLogger(__name__)


class ScheduleActivities:
    """Activities on the worker's Temporal schedules (through the activity's client: no app DB)."""

    def all(self) -> list[Callable[..., Any]]:
        return [self.trigger_sync]

    @activity.defn(name=names.TRIGGER_SYNC)
    async def trigger_sync(self, input: TriggerInput) -> bool:
        """Run another sync now through its schedule; False (and a log line) if it has no schedule."""
        try:
            # Through the schedule, whose overlap policy keeps one run going and at most one waiting.
            handle = activity.client().get_schedule_handle(input.schedule_id)
            await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            log.warning("no schedule %s to trigger: %s", input.schedule_id, error.message)
            return False
        return True

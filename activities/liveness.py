"""Heartbeats from a side thread while a sync activity waits on a target, so a dead worker is noticed.

Without them a worker killed during a grant or revoke leaves the attempt to its start-to-close timeout
(minutes) before another worker retries it; with them Temporal retries once a few heartbeats are missed.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity

HEARTBEAT_EVERY = 1.0
"""Seconds between heartbeats; the workflow's ``heartbeat_timeout`` for these activities is a few of these."""


@contextmanager
def heartbeating(every: float = HEARTBEAT_EVERY) -> Iterator[None]:
    """Heartbeat every ``every`` seconds until the block ends (a no-op outside an activity)."""
    if not activity.in_activity():
        yield
        return
    context = contextvars.copy_context()  # the activity's context, for activity.heartbeat in the side thread
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            context.run(activity.heartbeat)

    beater = threading.Thread(target=beat, name="activity-heartbeat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()

"""Heartbeats from a side thread while a sync activity waits on a target, so a dead worker is noticed.

Without them a worker killed during a grant or revoke leaves the attempt to its start-to-close timeout
(minutes) before another worker retries it; with them Temporal retries once a few heartbeats are missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import ParamSpec, TypeVar

from temporalio import activity

P = ParamSpec("P")
R = TypeVar("R")

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


def heartbeats(fn: Callable[P, R]) -> Callable[P, R]:
    """A sync activity that heartbeats all along (put it under ``@activity.defn``): a worker killed during it is
    noticed after the workflow's ``heartbeat_timeout``, not its start-to-close timeout."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with heartbeating():
            return fn(*args, **kwargs)

    return run


@asynccontextmanager
async def heartbeating_async(every: float = HEARTBEAT_EVERY) -> AsyncIterator[None]:
    """An async activity's ``heartbeating``: beats from a task on the activity's own loop (an async activity's
    heartbeat must be sent from it), the threads it awaits included."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    beater = asyncio.create_task(beat())
    try:
        yield
    finally:
        beater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beater

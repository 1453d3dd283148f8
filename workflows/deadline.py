"""A deadline a workflow sleeps toward that can move while it sleeps (samples-python's updatable timer)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow


class Deadline:
    """When something ends, such as a grant. :meth:`move` sets a new end and wakes whoever sleeps toward the
    old one, so they measure again; :meth:`sleep` also wakes for the caller's own reasons (a revoke).

    Sleeping is one durable timer per wait: a move cancels it and the next wait starts another.
    """

    def __init__(self, at: datetime | None = None) -> None:
        self._at = at
        self._moved = False

    @property
    def at(self) -> datetime:
        assert self._at is not None, "the deadline is not set yet"
        return self._at

    def move(self, at: datetime) -> None:
        """End at ``at`` instead (sooner or later); a sleeper wakes to measure again."""
        self._at = at
        self._moved = True

    def remaining(self) -> timedelta:
        return self.at - workflow.now()

    def passed(self) -> bool:
        return self.remaining() <= timedelta(0)

    async def sleep(self, *, until: datetime | None = None, unless: Callable[[], bool] = lambda: False) -> bool:
        """Sleep toward the deadline, or toward ``until`` on the way there (a warning before the end). True once
        it has passed; False when woken early, by a move or by ``unless()`` becoming true: the caller looks at
        what changed and sleeps again."""
        self._moved = False
        remaining = self.remaining() if until is None else until - workflow.now()
        try:
            await workflow.wait_condition(lambda: self._moved or unless(), timeout=remaining)
        except TimeoutError:
            return True
        return False

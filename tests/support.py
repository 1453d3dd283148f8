"""What tests share beyond fixtures: waiting for something that happens a moment later, and an integration's
discovery interval that fires in no test."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

NO_SCHEDULED_DISCOVERY = "P3650D"
"""The discovery interval of an integration a test discovers by hand. Temporal fires an interval schedule at the
multiples of its interval since 1970, so a PT1H or PT10M schedule runs on the hour or at 06:50 UTC, in the middle
of any test that spans it, and races the test's own discovery. Ten years' next run is 2029-12-17 00:00 UTC."""


@overload
async def eventually(
    read: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object] = ...,
    what: str,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
async def eventually(
    read: Callable[[], T],
    *,
    until: Callable[[T], object] = ...,
    what: str,
    within: float = ...,
    every: float = ...,
) -> T: ...


async def eventually(
    read: Callable[[], Any],
    *,
    until: Callable[[Any], object] = bool,
    what: str,
    within: float = 30,
    every: float = 0.1,
) -> Any:
    """Call ``read`` (sync or async) every ``every`` seconds until ``until`` holds for its value; return it.

    For what a test cannot be told of and must poll: visibility catching up, a schedule's run finishing, a
    process restarting. After ``within`` seconds it fails naming ``what`` it waited for and the last value
    seen, so a timeout reads as the behaviour that did not happen, not as a bare ``False``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"waited {within:g} s for {what}; last saw {value!r}")
        await asyncio.sleep(every)

"""A request's dry run: the policy's verdict (who would approve, or why not) before anything starts.

The request form shows it as the requester fills it in. Nothing is started and nothing is audited: the
same request, submitted, goes through ``starter.services.requests.create_request``, which judges it again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from access.types import RequestPlan
from starter.services import requests
from store.settings import Settings
from store.tables import User


async def preview_request(
    settings: Settings, requester: User, *, role: str, duration: timedelta, justification: str
) -> RequestPlan:
    """The plan ``create_request`` would start with these inputs, or the ``Refusal`` it would answer."""
    # The same judgement as a real request's (requests._plan), read in a thread like it.
    return await asyncio.to_thread(requests._plan, settings, requester, role, duration, justification)

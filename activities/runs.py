"""Whether a request's workflow run is going, and in which state it says it is.

Asked before anything ends a grant outside its run (an admin's revoke, the expiry backstop), since a
run that is going ends its own grant.
"""

from __future__ import annotations

from typing import NamedTuple

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from access import names


class RunState(NamedTuple):
    running: bool
    state: str | None
    """The run's ``LapseState`` search attribute, if it has one."""
    description: str
    """What became of the run, for a reason: ``its run was terminated``."""


async def request_run(client: Client, request_id: str) -> RunState:
    """Whether a request's run (the latest of its chain) is going, and in which state it says it is."""
    handle = client.get_workflow_handle(names.request_workflow_id(request_id))
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        return RunState(running=False, state=None, description="its run no longer exists")
    state = described.typed_search_attributes.get(names.STATE)
    if described.status is WorkflowExecutionStatus.RUNNING:
        return RunState(running=True, state=state, description=f"its run is going ({state})")
    what = described.status.name.lower().replace("_", " ") if described.status is not None else "closed"
    return RunState(running=False, state=state, description=f"its run was {what}")

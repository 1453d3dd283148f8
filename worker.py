"""The Lapse worker: runs every workflow and activity on the task queue.

Run it as ``python worker.py`` (``lapse run`` starts one for you); run several for more
throughput or availability — Temporal spreads the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import py_compile
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from access import names
from activities.audit import AuditActivities
from activities.backstop import BackstopActivities
from activities.birthright import BirthrightActivities
from activities.break_glass import BreakGlassActivities
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.directory import DirectoryActivities
from activities.discovery import DiscoveryActivities
from activities.drift import DriftActivities
from activities.grants import GrantActivities
from activities.notify.dispatcher import Dispatcher
from activities.requests import RequestActivities
from activities.reviews import ReviewActivities
from activities.schedules import ScheduleActivities
from store.audit_log import configure_audit
from store.credentials import credential_cipher
from store.settings import Settings, get_settings
from store.temporal import connect
from workflows.access_request import AccessRequestWorkflow
from workflows.audit import AuditCheckpointWorkflow
from workflows.backstop import ExpiryBackstopWorkflow
from workflows.birthright import BirthrightSyncWorkflow
from workflows.break_glass import BreakGlassReviewWorkflow
from workflows.directory import DirectorySyncWorkflow
from workflows.discovery import ConnectionTestWorkflow, DiscoveryWorkflow
from workflows.grants import GrantRevokeWorkflow
from workflows.review import ReviewCampaignWorkflow

WORKFLOWS: Sequence[type] = [
    AccessRequestWorkflow,
    DiscoveryWorkflow,
    ConnectionTestWorkflow,
    BirthrightSyncWorkflow,
    DirectorySyncWorkflow,
    GrantRevokeWorkflow,
    ExpiryBackstopWorkflow,
    AuditCheckpointWorkflow,
    ReviewCampaignWorkflow,
    BreakGlassReviewWorkflow,
]

SANDBOX_RESTRICTIONS = SandboxRestrictions.default.with_passthrough_modules("access", "pydantic", "pydantic_core")
"""The pure domain and pydantic are deterministic to import: the sandbox shares them instead of importing
them afresh for every workflow run. Nothing else passes through (``tests/test_layers.py``)."""


def compile_workflow_modules() -> None:
    """Write the bytecode of the workflow modules where Python looks for it.

    The sandbox imports a workflow's module afresh for every run; with no bytecode on disk (a checkout run
    under ``PYTHONDONTWRITEBYTECODE``, say) each import compiles the source, which was a quarter of a busy
    worker's CPU (bench/RESULTS.md). Where the directory is not writable, Python compiles as before.
    """
    modules = {workflow.__module__ for workflow in WORKFLOWS} | {"workflows", names.__name__}
    for module in sorted(modules):
        source = getattr(sys.modules.get(module), "__file__", None)
        if source:
            with contextlib.suppress(OSError, py_compile.PyCompileError):
                py_compile.compile(source, cfile=importlib.util.cache_from_source(source), doraise=True)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    connectors: Mapping[str, ConnectorFactory] = BUILT_IN,
    executor: ThreadPoolExecutor | None = None,
) -> Worker:
    """A worker for Lapse's workflows and activities; tests pass their own queue and connectors."""
    configure_audit(settings)  # the audit key and head checkpoint of its app DB
    compile_workflow_modules()
    activities = [
        *RequestActivities(settings.db_url, connectors=connectors, cipher=partial(credential_cipher, settings)).all(),
        *GrantActivities(settings.db_url, connectors=connectors).all(),
        *DiscoveryActivities(settings.db_url, connectors=connectors).all(),
        *DriftActivities(settings.db_url, connectors=connectors).all(),
        *BirthrightActivities(settings.db_url, connectors=connectors).all(),
        *BackstopActivities(settings.db_url, connectors=connectors).all(),
        *ReviewActivities(settings.db_url, connectors=connectors).all(),
        *AuditActivities(settings.db_url).all(),
        *BreakGlassActivities(settings.db_url).all(),
        *DirectoryActivities(
            settings.db_url, org_file=settings.org_file, max_leavers=settings.directory_max_leavers
        ).all(),
        *ScheduleActivities().all(),
    ]
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS),
        activities=activities,
        activity_executor=executor or ThreadPoolExecutor(max_workers=32),
        max_concurrent_activities=32,
        max_concurrent_local_activities=32,
        # A worker that died leaves its sticky queue unpolled: its tasks go to the others after this.
        sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    settings = get_settings()
    client = await connect(settings)
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Notifications go out from beside the worker: the outbox's rows are sent with retries, so the workflows
    # never wait for a chat or mail server (activities/notify/dispatcher.py).
    async with worker, Dispatcher(settings.db_url, settings):
        logging.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # the Temporal client can abort the interpreter at exit (sdk-python #300)

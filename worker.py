"""The Lapse worker: runs every workflow and activity on the task queue.

Run it as ``lapse worker`` (or ``python -m worker``; ``lapse run`` starts one for you); run several for more
throughput or availability — Temporal spreads the work. Each has an ops HTTP port for probes and metrics, and
stops gracefully on SIGTERM (``serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import importlib.util
import logging
import os
import pkgutil
import py_compile
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from access import names
from access.durations import format_duration
from activities.audit import AuditActivities
from activities.backstop import BackstopActivities
from activities.birthright import BirthrightActivities
from activities.break_glass import BreakGlassActivities
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.directory import DirectoryActivities
from activities.discovery import DiscoveryActivities
from activities.drift import DriftActivities
from activities.grants import GrantActivities
from activities.metrics import register_db_collector
from activities.notify.dispatcher import Dispatcher
from activities.requests import RequestActivities
from activities.reviews import ReviewActivities
from activities.schedules import ScheduleActivities
from store.audit_log import configure_audit
from store.credentials import credential_cipher
from store.db import migrate, shown_url
from store.health import database_ready, readiness, ready, scraper_allowed
from store.logs import configure_logging
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

log = logging.getLogger("lapse.worker")


def workflow_helpers() -> tuple[str, ...]:
    """The modules of ``workflows`` that define no workflow: the parts the workflows are built from (a request's
    messages, records, timers, refusals...). Found, not listed, so that a new one is checked like the rest."""
    package = importlib.import_module("workflows")
    defining = {workflow.__module__ for workflow in WORKFLOWS}
    found = (f"workflows.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.ispkg)
    return tuple(sorted(module for module in found if module not in defining))


SANDBOX_RESTRICTIONS = SandboxRestrictions.default.with_passthrough_modules(
    "access", "pydantic", "pydantic_core", *workflow_helpers()
)
"""What the sandbox shares instead of importing afresh for every workflow run: the pure domain, pydantic, and the
workflows' helper modules (``workflow_helpers``). Re-importing those helpers was two thirds of the cost of
starting a request's run (bench/RESULTS.md). The sandbox's run-time checks do not reach code it passes through,
so ``tests/test_layers.py`` checks the helpers instead: no workflow, no I/O or clock import, no mutable module
state. Each workflow's own module is still imported afresh for each run."""


def compile_workflow_modules() -> None:
    """Write the bytecode of the workflow modules where Python looks for it.

    The sandbox imports a workflow's module afresh for every run; with no bytecode on disk (a checkout run
    under ``PYTHONDONTWRITEBYTECODE``, say) each import compiles the source, which was a quarter of a busy
    worker's CPU (bench/RESULTS.md). Where the directory is not writable, Python compiles as before.
    """
    modules = {workflow.__module__ for workflow in WORKFLOWS} | {"workflows", names.__name__}
    sources = {getattr(sys.modules.get(module), "__file__", None) for module in modules}
    # And every module of the package: a helper passed through is imported once, from its bytecode too.
    package = getattr(sys.modules.get("workflows"), "__file__", None)
    if package:
        sources |= {str(path) for path in Path(package).parent.glob("*.py")}
    for source in sorted(s for s in sources if s):
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
        # On shutdown (SIGTERM), running activities get this long to finish before they are cancelled.
        graceful_shutdown_timeout=settings.shutdown_grace,
        max_cached_workflows=settings.max_cached_workflows,
    )


class OpsPort:
    """The worker's small HTTP port for orchestrators and Prometheus: ``/healthz`` (alive), ``/readyz`` (Temporal
    and the app DB answer, the schema is current, and the worker is polling), ``/metrics`` (with
    ``LAPSE_METRICS_TOKEN`` set, only for ``Authorization: Bearer`` with it; without, only for this machine and
    ``LAPSE_METRICS_NETWORKS``, as the API's). None when ``ops_port`` is 0."""

    def __init__(self, settings: Settings, client: Client | None, *, process: str = "worker") -> None:
        self._settings = settings
        self._client = client
        self._process = process
        self._runner: web.AppRunner | None = None
        self.polling = False
        """Whether the Temporal worker is polling for tasks, or the notifier claiming rows (``serve`` says)."""

    async def __aenter__(self) -> OpsPort:
        host, port = self._settings.ops_host, self._settings.ops_port
        if port == 0:
            return self
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as error:
            await self._runner.cleanup()
            raise SystemExit(
                f"the {self._process}'s ops port {host}:{port} cannot be opened ({error.strerror}): set "
                f"LAPSE_OPS_PORT to a free port (each worker or notifier on a host needs its own), or 0 for none"
            ) from None
        log.info("ops port at http://%s:%d (/healthz, /readyz, /metrics)", host, port)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._client is None:  # the notifier: the app DB is all it needs
            checks = await database_ready(self._settings.db_url)
            checks["sending"] = "ok" if self.polling else f"the {self._process} is not sending"
        else:
            checks = await readiness(self._client, self._settings.db_url)
            checks["polling"] = "ok" if self.polling else f"the {self._process} is not polling"
        status = ready(checks)
        body = {"status": "ready" if status else "not ready", "checks": checks}
        return web.json_response(body, status=200 if status else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        """Guarded as the API's: the token when ``LAPSE_METRICS_TOKEN`` is set, else this machine and
        ``LAPSE_METRICS_NETWORKS`` only, not through a proxy (``store.health.scraper_allowed``)."""
        token = self._settings.metrics_token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
                return web.Response(status=401, text="the metrics need Authorization: Bearer <LAPSE_METRICS_TOKEN>\n")
        elif not scraper_allowed(self._settings, request.remote, request.headers.keys()):
            return web.Response(
                status=403,
                text="the metrics are served to this machine and LAPSE_METRICS_NETWORKS only, not through a proxy "
                "(or with LAPSE_METRICS_TOKEN)\n",
            )
        try:
            metrics: Any = importlib.import_module("activities.metrics")
        except ModuleNotFoundError as error:
            if error.name != "activities.metrics":
                raise
            return web.Response(status=503, text="metrics not built\n")
        # Off the event loop: a scrape may read the app DB, and this loop runs the workflow tasks.
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": content_type})


async def serve(settings: Settings, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
    """Run one worker until SIGTERM or SIGINT: the Temporal worker, the notification dispatcher beside it, and the
    ops HTTP port (``/healthz``, ``/readyz``, ``/metrics``; ``settings.ops_port``).

    On the signal the worker stops polling and lets its running activities finish for up to
    ``settings.shutdown_grace`` before cancelling them (Temporal gives a cancelled one to another worker), the
    dispatcher stops claiming and finishes its sends under way, and the ops port closes last.
    """
    client = await connect(settings)
    register_db_collector(settings.db_url)  # the app DB's gauges on the ops port's /metrics
    worker = build_worker(client, settings, connectors=connectors)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Notifications go out from beside the worker: the outbox's rows are sent with retries, so the workflows
    # never wait for a chat or mail server (activities/notify/dispatcher.py). Unless ``lapse notifier`` sends them.
    dispatcher = Dispatcher(settings.db_url, settings) if settings.worker_notifies else None
    async with OpsPort(settings, client) as ops, dispatcher or contextlib.nullcontext(), worker:
        ops.polling = True
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        if dispatcher is None:
            log.info("this worker sends no notifications (LAPSE_WORKER_NOTIFIES=false): `lapse notifier` must run")
        await stop.wait()
        ops.polling = False
        grace = format_duration(settings.shutdown_grace)
        log.info("worker stopping: running activities have up to %s to finish", grace)
        if dispatcher is not None:
            dispatcher.stop()  # stops claiming now; its sends under way finish while the worker drains
    log.info("worker stopped")


NOTIFIER_POLL = 0.05
"""Seconds between a notifier's looks at the outbox. In a worker, a commit that queues rows wakes its dispatcher at
once; a notifier in its own process hears of no commit, so it looks often. A look that finds nothing due is one
indexed read, which on SQLite takes no write lock. A person's next message about a request, which waits for their
last one to be sent, goes at the next look too (a worker's dispatcher is woken for it instead)."""


async def serve_notifier(settings: Settings) -> None:
    """Run the notification dispatcher alone until SIGTERM or SIGINT (``lapse notifier``): the outbox's sending and
    the expiring-soon scan, off the workers' CPU, with its own ops port. Workers then run with
    ``LAPSE_WORKER_NOTIFIES=false``. Several may run: each claims rows under a lease. No Temporal connection: the
    app DB holds all it needs. On the signal it stops claiming and finishes the sends under way."""
    configure_audit(settings)  # a send given up, an expiring-soon warning: each is audited
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dispatcher = Dispatcher(settings.db_url, settings, poll=NOTIFIER_POLL, wake_followed=False)
    async with OpsPort(settings, None, process="notifier") as ops:
        sending = asyncio.create_task(dispatcher.run(), name="lapse-notifier")
        stopping = asyncio.create_task(stop.wait())
        ops.polling = True
        log.info("notifier sending the outbox of %s", shown_url(settings.db_url))
        await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        ops.polling = False
        if sending.done():  # it ended by itself: say so and exit non-zero, so that the supervisor restarts it
            stopping.cancel()
            error = None if sending.cancelled() else sending.exception()
            log.error("the notifier's dispatcher ended by itself (%r): exiting", error)
            raise SystemExit(1)
        log.info("notifier stopping: sends under way finish first")
        dispatcher.stop()
        await sending
    log.info("notifier stopped")


def main(process: str = "worker") -> None:
    """``lapse worker`` (and ``python -m worker``), or ``lapse notifier`` with ``process="notifier"``: log as the
    settings say, migrate if asked, then serve."""
    settings = get_settings()
    configure_logging(settings, process)
    if settings.migrate_on_start:
        migrate(settings.db_url)
    asyncio.run(serve_notifier(settings) if process == "notifier" else serve(settings))


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["notifier"]):
        raise SystemExit(f"usage: python -m worker [notifier] (not {' '.join(sys.argv[1:])!r})")
    main("notifier" if sys.argv[1:] else "worker")  # ``python -m worker notifier``: a notifier
    os._exit(0)  # the Temporal client can abort the interpreter at exit (sdk-python #300)

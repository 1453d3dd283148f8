"""Lifecycle benchmark: Lapse's full request → approve → grant → expire → revoke, against bare Temporal.

Starts its own stack in a temporary directory (Temporal dev server, ``python -m worker`` and the
API under uvicorn, as ``lapse run`` would), then:

1. **Lapse**: requests arrive at a steady rate through the HTTP API; each is approved, granted
   (ledger), held for ``--hold`` seconds and revoked by its workflow.
2. **Bare Temporal**: a minimal workflow (start, an ``approve`` update, a no-op activity, a timer of
   the same hold, another no-op activity) on its own task queue of the same server, run by an
   in-process worker, driven at the same rate and count.
3. **Burst**: ``--burst`` automatic grants timed to expire in the same second; how long until the
   last one is revoked.

Run from the project root::

    .venv/bin/python -m bench.lifecycle --rate 5 --seconds 10 --burst 50   # quick
    .venv/bin/python -m bench.lifecycle                                     # 10/s for 60 s, burst 500
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import contextlib
    import json
    import math
    import os
    import random
    import re
    import secrets
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from collections import Counter
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence
    from dataclasses import dataclass
    from functools import partial
    from pathlib import Path
    from typing import Any

    import httpx
    import yaml
    from pydantic import BaseModel
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowHandle
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Worker

    from starter.stack import (
        NOTIFIER_COMMAND,
        WORKER_COMMAND,
        api_command,
        port_open,
        prepare_database,
        stop_all,
        temporal_server_command,
    )
    from store.org import DEMO_ORG
    from store.settings import Settings

LAPSE_QUEUE = "lapse"
BARE_QUEUE = "bench-bare"
REQUESTER = "alan@example.com"
APPROVER = "linus@example.com"
ADMIN = "ada@example.com"
BURST_REQUESTER = "katherine@example.com"
APPROVED_ROLE = "ledger/payments-api/deploy"
"""Alan's manager Linus approves it in one step (demo organisation, ``manager-approval``)."""
AUTOMATIC_ROLE = "ledger/prod-db/read"
"""Up to PT1H without approval (``read-only`` / ``quick look``)."""
ENDED = {"expired", "revoked", "denied", "cancelled", "timed_out", "failed"}

TARGET_RATIO = 0.8
TARGET_REVOKE_LAG_P99_S = 1.0
TARGET_EVENTS = 40

THROUGHPUT_DEFINITION = (
    "steady = completions between the 10th and 90th percentile completion times divided by that span "
    "(completion time = the workflow's ended_at); overall = completed / (last ended_at - first arrival)"
)


# --- the bare-Temporal workflow --------------------------------------------------------------


class BareTimes(BaseModel):
    granted_at: datetime
    expires_at: datetime
    ended_at: datetime


@activity.defn(name="bench_bare_grant")
async def bare_grant() -> datetime:
    return datetime.now(UTC)


@activity.defn(name="bench_bare_revoke")
async def bare_revoke() -> None:
    return None


@workflow.defn(name="BenchBareLifecycle")
class BareLifecycle:
    """The least a grant lifecycle needs: approval, grant, hold, revoke."""

    def __init__(self) -> None:
        self._approved = False

    @workflow.run
    async def run(self, hold_seconds: float) -> BareTimes:
        await workflow.wait_condition(lambda: self._approved)
        granted_at = await workflow.execute_activity(bare_grant, start_to_close_timeout=timedelta(seconds=30))
        expires_at = granted_at + timedelta(seconds=hold_seconds)
        remaining = expires_at - workflow.now()
        if remaining > timedelta(0):
            await workflow.sleep(remaining)
        await workflow.execute_activity(bare_revoke, start_to_close_timeout=timedelta(seconds=30))
        return BareTimes(granted_at=granted_at, expires_at=expires_at, ended_at=workflow.now())

    @workflow.update
    async def approve(self) -> None:
        self._approved = True


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Lifecycle:
    """One request's timeline; the server-side times come from its status (or workflow result)."""

    index: int
    request_id: str | None = None
    late_s: float = 0.0
    """How late the load generator sent it, against its schedule."""
    arrived_at: datetime | None = None
    create_s: float | None = None
    approve_sent_at: datetime | None = None
    approve_s: float | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    state: str | None = None
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.state == "expired" and self.ended_at is not None and self.expires_at is not None

    @property
    def approval_to_grant_s(self) -> float | None:
        if self.granted_at is None or self.approve_sent_at is None:
            return None
        return (self.granted_at - self.approve_sent_at).total_seconds()

    @property
    def revoke_lag_s(self) -> float | None:
        if self.ended_at is None or self.expires_at is None:
            return None
        return (self.ended_at - self.expires_at).total_seconds()


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def throughput(records: Sequence[Lifecycle]) -> dict[str, Any]:
    done = sorted(r.ended_at for r in records if r.completed and r.ended_at is not None)
    arrivals = [r.arrived_at for r in records if r.arrived_at is not None]
    result: dict[str, Any] = {"completed": len(done), "steady": None, "overall": None, "steady_window_s": None}
    if done and arrivals:
        span = (done[-1] - min(arrivals)).total_seconds()
        result["overall"] = len(done) / span if span > 0 else None
    if len(done) >= 2:
        low = math.floor((len(done) - 1) * 0.1)
        high = math.ceil((len(done) - 1) * 0.9)
        if high == low:
            low, high = 0, len(done) - 1
        window = (done[high] - done[low]).total_seconds()
        result["steady_window_s"] = window
        result["steady"] = (high - low) / window if window > 0 else None
    return result


def summarize(records: Sequence[Lifecycle], history: list[dict[str, Any]]) -> dict[str, Any]:
    completed = [r for r in records if r.completed]
    grants = [v for r in completed if (v := r.approval_to_grant_s) is not None]
    lags = [v for r in completed if (v := r.revoke_lag_s) is not None]
    events = [h["events"] for h in history]
    return {
        "lifecycles": len(records),
        "throughput": throughput(records),
        "approval_to_grant_s": distribution(grants),
        "revoke_lag_s": distribution(lags),
        "create_response_s": distribution([r.create_s for r in records if r.create_s is not None]),
        "approve_response_s": distribution([r.approve_s for r in records if r.approve_s is not None]),
        "max_arrival_lateness_s": max((r.late_s for r in records), default=0.0),
        "failures": Counter(r.error or f"ended {r.state}" for r in records if not r.completed),
        "history_events": {
            "samples": events,
            "median": percentile(events, 50),
            "min": min(events, default=None),
            "max": max(events, default=None),
            "mean_by_type": mean_by_type(history),
        },
        "windows": windows(records),
    }


def mean_by_type(history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Events of each type per lifecycle, averaged over the sampled histories."""
    total: Counter[str] = Counter()
    for h in history:
        total.update(h["by_type"])
    return {kind: count / len(history) for kind, count in total.most_common()} if history else {}


def windows(records: Sequence[Lifecycle], parts: int = 6) -> list[dict[str, Any]]:
    """Latencies by arrival time, in ``parts`` equal windows: does a backlog build up?"""
    arrivals = [r.arrived_at for r in records if r.arrived_at is not None]
    if not arrivals:
        return []
    first = min(arrivals)
    width = max((max(arrivals) - first).total_seconds() / parts, 1e-9)
    result = []
    for part in range(parts):
        chosen = [
            r
            for r in records
            if r.completed
            and r.arrived_at is not None
            and min(int((r.arrived_at - first).total_seconds() / width), parts - 1) == part
        ]
        result.append(
            {
                "from_s": part * width,
                "completed": len(chosen),
                "approval_to_grant_p99_s": percentile(
                    [v for r in chosen if (v := r.approval_to_grant_s) is not None], 99
                ),
                "revoke_lag_p99_s": percentile([v for r in chosen if (v := r.revoke_lag_s) is not None], 99),
            }
        )
    return result


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _fill(record: Lifecycle, status: dict[str, Any]) -> None:
    record.state = status["state"]
    record.granted_at = _when(status.get("granted_at"))
    record.expires_at = _when(status.get("expires_at"))
    record.ended_at = _when(status.get("ended_at"))


def _settle(record: Lifecycle, status: dict[str, Any] | None, waited: str = "") -> None:
    """Take a request's last status into its record, noting why it did not end."""
    if status is None:
        record.error = "no status"
        return
    _fill(record, status)
    if status["state"] not in ENDED:
        record.error = f"still {status['state']}{waited}"


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def history_of(client: Client, workflow_id: str) -> dict[str, Any]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    return {"workflow_id": workflow_id, "events": len(history.events), "by_type": dict(kinds.most_common())}


async def sample_histories(client: Client, workflow_ids: Sequence[str], samples: int) -> list[dict[str, Any]]:
    if not workflow_ids or samples <= 0:
        return []
    step = max(1, len(workflow_ids) // samples)
    chosen = list(workflow_ids)[::step][:samples]
    return list(await asyncio.gather(*(history_of(client, w) for w in chosen)))


# --- the stack ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


class Stack:
    """A fresh Temporal dev server, app DB, worker(s) and API in a temporary directory.

    Each worker gets its own free ops port (``LAPSE_OPS_PORT``: the default 9464 would let only one worker per
    host start); ``ops_ports`` maps a worker's name (``worker``, ``worker-2``, ...) to it. With ``notifiers``, that
    many ``lapse notifier`` processes send the notifications instead of the workers (``notifier``, ...).
    """

    def __init__(
        self, data_dir: Path, overrides: dict[str, str] | None = None, workers: int = 1, notifiers: int = 0
    ) -> None:
        self.data_dir = data_dir
        self.overrides = dict(overrides or {})
        """``LAPSE_*`` settings for the worker and API beyond the stack's own (``--set``)."""
        self.workers = workers
        self.notifiers = notifiers
        self.ops_ports: dict[str, int] = {}
        self.metrics_token = secrets.token_urlsafe(16)
        """Scrapes of ``/metrics`` need it: the stack trusts the loopback address as its SSO proxy, so a caller
        from this host is not taken to be the machine's own (``store.health.scraper_allowed``)."""
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data_dir,
            database_url=None,
            temporal_address=f"127.0.0.1:{free_port()}",
            temporal_ui_port=free_port(),
            api_port=free_port(),
            task_queue=LAPSE_QUEUE,
        )
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    def use_org(self, path: Path, org: dict[str, Any]) -> None:
        """Load ``org`` (an organisation file's content), written to ``path``, instead of the demo's."""
        path.write_text(yaml.safe_dump(org, sort_keys=False))
        self.overrides["LAPSE_ORG_FILE"] = str(path)
        self.settings = self.settings.model_copy(update={"org_file": path})  # prepare_database loads it

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
        env |= {
            "LAPSE_DATA_DIR": str(self.data_dir),
            "LAPSE_TEMPORAL_ADDRESS": self.settings.temporal_address,
            "LAPSE_TASK_QUEUE": self.settings.task_queue,
            "LAPSE_API_PORT": str(self.settings.api_port),
            # The load generator signs in as the SSO proxy would, from this host.
            "LAPSE_AUTH": "proxy",
            "LAPSE_TRUSTED_PROXIES": "127.0.0.1,::1",
            # No ops port unless ``start`` gives a worker its own (another stack on this host may hold 9464).
            "LAPSE_OPS_PORT": "0",
            "LAPSE_METRICS_TOKEN": self.metrics_token,
            # One requester asks for everything here: the per-person cap on pending requests would refuse them.
            "LAPSE_MAX_PENDING_PER_REQUESTER": "0",
        }
        return env | self.overrides

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.data_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self._env(), **(env or {}), **self.overrides},
                cwd=project_root(),
                start_new_session=True,
            )
        self.children.append((name, process))
        return process

    def _wait(
        self, check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with code {process.returncode}; see {self.data_dir}")
            time.sleep(0.2)
        raise RuntimeError(f"{what} was not ready within {timeout:.0f}s; see {self.data_dir}")

    def start(self) -> None:
        if "LAPSE_ORG_FILE" not in self.overrides:
            self.use_org(self.data_dir / "bench-org.yaml", quiet_demo_org())
        elif self.settings.org_file is None:  # --set LAPSE_ORG_FILE=...: the first load reads it too
            self.settings = self.settings.model_copy(update={"org_file": Path(self.overrides["LAPSE_ORG_FILE"])})
        settings = self.settings
        host, _, port = settings.temporal_address.rpartition(":")
        server = self._start("temporal", temporal_server_command(settings))
        self._wait(lambda: port_open(host, int(port)), "the Temporal dev server", server)
        prepare_database(settings)
        workers = []
        notifies = {"LAPSE_WORKER_NOTIFIES": "false"} if self.notifiers else {}
        for index in range(self.workers):
            name = "worker" if index == 0 else f"worker-{index + 1}"
            self.ops_ports[name] = free_port()
            env = {"LAPSE_OPS_PORT": str(self.ops_ports[name]), **notifies}
            workers.append((name, self._start(name, WORKER_COMMAND, env)))
        for index in range(self.notifiers):
            name = "notifier" if index == 0 else f"notifier-{index + 1}"
            self.ops_ports[name] = free_port()
            workers.append((name, self._start(name, NOTIFIER_COMMAND, {"LAPSE_OPS_PORT": str(self.ops_ports[name])})))
        api = self._start("api", api_command(settings))
        for name, worker in workers:
            self._wait(partial(self._polling, name), f"the {name}", worker)

        def api_ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
            return False

        self._wait(api_ready, "the API", api)

    def _polling(self, worker: str) -> bool:
        return any(ready in self.log(worker) for ready in ("worker polling", "notifier sending"))

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_all(process for _name, process in reversed(self.children))
        self.children.clear()

    def log_findings(self) -> dict[str, list[str]]:
        """Errors and warnings in the children's logs (Temporal's own: error level only)."""
        findings: dict[str, list[str]] = {}
        pattern = {
            "worker": re.compile(r"Traceback|ERROR|WARNING|Exception"),
            "api": re.compile(r"Traceback|ERROR|WARNING|Exception"),
            "temporal": re.compile(r'"level":"(error|fatal|panic)"|\blevel=(error|fatal)'),
        }
        names = [*pattern, *(name for name in self.ops_ports if name != "worker")]
        for name in names:
            regex = pattern[name if name in pattern else "worker"]
            lines = [line for line in self.log(name).splitlines() if regex.search(line)]
            if lines:
                findings[name] = lines
        return findings


class Api:
    """The Lapse API as the given users, counting every non-2xx answer and transport error.

    Calls are spread over several clients: httpcore's pool scans every connection for every request,
    and one pool of hundreds of connections cost the load generator as much CPU as the Temporal server
    (measured with py-spy at 30/s) on the same two cores it was measuring.
    """

    def __init__(self, http: httpx.AsyncClient | Sequence[httpx.AsyncClient]) -> None:
        self.clients = [http] if isinstance(http, httpx.AsyncClient) else list(http)
        self._next = 0
        self.errors: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    async def call(
        self, user: str, method: str, path: str, body: Any = None, route: str | None = None
    ) -> httpx.Response:
        key = f"{method} {route or path}"
        self.calls[key] += 1
        try:
            self._next = (self._next + 1) % len(self.clients)
            http = self.clients[self._next]
            response = await http.request(method, path, json=body, headers={"X-Forwarded-Email": user})
        except httpx.HTTPError as error:
            self.errors[f"{key} {type(error).__name__}"] += 1
            raise
        if response.status_code >= 400:
            label = f"{key} {response.status_code}"
            self.errors[label] += 1
            self.examples.setdefault(label, response.text[:300])
        return response

    async def status(self, request_id: str) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError):
            response = await self.call(ADMIN, "GET", f"/api/requests/{request_id}", route="/api/requests/{id}")
            if response.status_code == 200:
                result: dict[str, Any] = response.json()
                return result
        return None

    async def poll(
        self, request_id: str, done: Callable[[dict[str, Any]], bool], interval: float, most: float, deadline: float
    ) -> dict[str, Any] | None:
        """Poll the status until ``done``: first at a random offset within ``interval`` (to spread the
        polls out), then every ``interval``, backing off by half each time up to ``most`` seconds.

        Only detection waits on the polls; every figure comes from the workflow's own timestamps.
        """
        await asyncio.sleep(random.uniform(0, interval))
        last: dict[str, Any] | None = None
        while True:
            last = await self.status(request_id) or last
            if last is not None and done(last):
                return last
            if time.monotonic() > deadline:
                return last
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, most)


@contextlib.asynccontextmanager
async def api_clients(base_url: str, connections: int, per_client: int = 8) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``connections`` connections to the API in clients of ``per_client`` each (see ``Api``)."""
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    async with contextlib.AsyncExitStack() as stack:
        count = max(1, connections // per_client)
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits))
            for _ in range(count)
        ]


async def lapse_lifecycle(api: Api, record: Lifecycle, at: float, args: argparse.Namespace) -> None:
    give_up_s = args.hold + args.timeout
    await _sleep_until(at)
    record.late_s = time.monotonic() - at
    record.arrived_at = _utcnow()
    deadline = time.monotonic() + give_up_s
    try:
        started = time.monotonic()
        body = {"role": APPROVED_ROLE, "duration": args.hold, "justification": "lifecycle benchmark"}
        response = await api.call(REQUESTER, "POST", "/api/requests", body)
        record.create_s = time.monotonic() - started
        if response.status_code != 201:
            record.error = f"create {response.status_code}"
            return
        request_id = record.request_id = response.json()["id"]

        record.approve_sent_at = _utcnow()
        started = time.monotonic()
        route = "/api/requests/{id}/approve"
        response = await api.call(APPROVER, "POST", f"/api/requests/{request_id}/approve", {"comment": "ok"}, route)
        record.approve_s = time.monotonic() - started
        if response.status_code != 200:
            record.error = f"approve {response.status_code}"
            return
    except httpx.HTTPError as error:
        record.error = type(error).__name__
        return

    # Nothing can end before approve + hold (expires_at = granted_at + hold): poll from then on.
    await asyncio.sleep(max(0.0, args.hold - (_utcnow() - record.approve_sent_at).total_seconds()))
    status = await api.poll(request_id, lambda s: s["state"] in ENDED, args.poll, args.poll_max, deadline)
    _settle(record, status, f" after {give_up_s:.0f}s")


async def run_lapse(api: Api, client: Client, args: argparse.Namespace) -> dict[str, Any]:
    count = max(1, round(args.rate * args.seconds))
    records = [Lifecycle(index=i) for i in range(count)]
    begin = time.monotonic() + 0.5
    await asyncio.gather(*(lapse_lifecycle(api, r, begin + r.index / args.rate, args) for r in records))
    ids = [f"access-request-{r.request_id}" for r in records if r.completed]
    history = await sample_histories(client, ids, args.history_samples)
    return {"records": records, "summary": summarize(records, history)}


# --- driving the bare workflow ----------------------------------------------------------------


async def bare_lifecycle(client: Client, record: Lifecycle, at: float, hold: float, tag: str, give_up_s: float) -> None:
    await _sleep_until(at)
    record.late_s = time.monotonic() - at
    record.arrived_at = _utcnow()
    try:
        started = time.monotonic()
        handle: WorkflowHandle[Any, BareTimes] = await client.start_workflow(
            BareLifecycle.run, hold, id=f"bench-bare-{tag}-{record.index}", task_queue=BARE_QUEUE
        )
        record.create_s = time.monotonic() - started
        record.request_id = handle.id
        record.approve_sent_at = _utcnow()
        started = time.monotonic()
        await handle.execute_update(BareLifecycle.approve)
        record.approve_s = time.monotonic() - started
        times = await asyncio.wait_for(handle.result(), timeout=give_up_s)
    except Exception as error:
        record.error = f"{type(error).__name__}: {error}"[:200]
        return
    record.state = "expired"
    record.granted_at, record.expires_at, record.ended_at = times.granted_at, times.expires_at, times.ended_at


async def run_bare(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    count = max(1, round(args.rate * args.seconds))
    records = [Lifecycle(index=i) for i in range(count)]
    tag = f"{int(time.time())}"
    worker = Worker(client, task_queue=BARE_QUEUE, workflows=[BareLifecycle], activities=[bare_grant, bare_revoke])
    async with worker:
        begin = time.monotonic() + 0.5
        timeout = args.hold + args.timeout
        await asyncio.gather(
            *(bare_lifecycle(client, r, begin + r.index / args.rate, args.hold, tag, timeout) for r in records)
        )
    ids = [r.request_id for r in records if r.completed and r.request_id]
    history = await sample_histories(client, ids, args.history_samples)
    return {"records": records, "summary": summarize(records, history)}


# --- the burst ------------------------------------------------------------------------------


async def run_burst(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Create ``--burst`` automatic grants whose expiries meet in one second; time the revokes."""
    records = [Lifecycle(index=i) for i in range(args.burst)]
    expire_at = time.time() + args.burst_hold
    gate = asyncio.Semaphore(args.burst_concurrency)
    recent: list[float] = []
    """Latest create response times: the grant follows the response, so aim that much earlier."""

    async def create(record: Lifecycle) -> None:
        async with gate:
            # Durations are whole seconds, counted from the grant: aim for the target second.
            expected_delay = percentile(recent[-32:], 50) or 0.0
            duration = max(1, round(expire_at - time.time() - expected_delay))
            record.arrived_at = _utcnow()
            started = time.monotonic()
            try:
                body = {"role": AUTOMATIC_ROLE, "duration": duration}
                response = await api.call(BURST_REQUESTER, "POST", "/api/requests", body)
            except httpx.HTTPError as error:
                record.error = type(error).__name__
                return
            record.create_s = time.monotonic() - started
            recent.append(record.create_s)
            if response.status_code != 201:
                record.error = f"create {response.status_code}"
                return
            record.request_id = response.json()["id"]

    started = time.monotonic()
    await asyncio.gather(*(create(r) for r in records))
    creating_s = time.monotonic() - started
    created = [r for r in records if r.request_id]

    # Wait, without a poll per request, until nothing is granted or being revoked any more.
    deadline = time.monotonic() + max(0.0, expire_at - time.time()) + args.timeout
    await asyncio.sleep(max(0.0, expire_at - time.time() - 1))
    while time.monotonic() < deadline:
        busy = False
        for state in ("provisioning", "active", "revoking"):
            with contextlib.suppress(httpx.HTTPError):
                response = await api.call(ADMIN, "GET", f"/api/requests?state={state}&limit=1", route="/api/requests")
                busy = busy or response.status_code != 200 or bool(response.json())
        if not busy:
            break
        await asyncio.sleep(args.poll)

    # Then read every request's final status once (times are the workflow's, not the poll's).
    gate = asyncio.Semaphore(8)

    async def read(record: Lifecycle) -> None:
        assert record.request_id is not None
        async with gate:
            status = await api.status(record.request_id)
        _settle(record, status)

    await asyncio.gather(*(read(r) for r in created))
    done = [r for r in created if r.completed]
    expiries = [r.expires_at for r in done if r.expires_at]
    ends = [r.ended_at for r in done if r.ended_at]
    lags = [v for r in done if (v := r.revoke_lag_s) is not None]
    return {
        "requested": args.burst,
        "created": len(created),
        "completed": len(done),
        "creating_s": creating_s,
        "create_response_s": distribution([r.create_s for r in records if r.create_s is not None]),
        "expiry_spread_s": (max(expiries) - min(expiries)).total_seconds() if expiries else None,
        "drain_s": (max(ends) - min(expiries)).total_seconds() if ends and expiries else None,
        "after_last_expiry_s": (max(ends) - max(expiries)).total_seconds() if ends and expiries else None,
        "created_late": sum(1 for r in records if r.arrived_at and r.arrived_at.timestamp() > expire_at - 2),
        "revoke_lag_s": distribution(lags),
        "failures": Counter(r.error or f"ended {r.state}" for r in records if not r.completed),
    }


# --- the report -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def report(figures: dict[str, Any]) -> str:
    config = figures["config"]
    lapse, bare = figures["lapse"], figures["bare"]
    targets = figures["targets"]
    lines = [
        "",
        "Lapse lifecycle benchmark",
        f"  {config['lifecycles']} lifecycles per run at {config['rate']:g}/s for {config['seconds']:g} s, "
        f"hold {config['hold']:g} s, status polled from approve + hold every {config['poll']:g} s "
        f"backing off to {config['poll_max']:g} s",
        f"  {config['temporal']}; {config['cpus']} CPUs; Python {config['python']}; "
        f"{config.get('workers', 1)} worker process(es)",
        *([f"  settings: {' '.join(f'{k}={v}' for k, v in config['settings'].items())}"] if config["settings"] else []),
        "",
    ]
    row = "  {:<38} {:>16} {:>16}   {}"
    lines.append(row.format("", "Lapse", "bare Temporal", "target"))
    lt, bt = lapse["throughput"], bare["throughput"]
    lines.append(
        row.format(
            "completed lifecycles",
            f"{lt['completed']}/{lapse['lifecycles']}",
            f"{bt['completed']}/{bare['lifecycles']}",
            "",
        )
    )
    lines.append(row.format("throughput, steady (lifecycles/s)", _num(lt["steady"]), _num(bt["steady"]), ""))
    lines.append(row.format("throughput, overall (lifecycles/s)", _num(lt["overall"]), _num(bt["overall"]), ""))
    lines.append(
        row.format(
            "  ratio Lapse/bare, steady", _num(figures["ratio"]), "", f">= {TARGET_RATIO}  {_verdict(targets['ratio'])}"
        )
    )
    lines.append(row.format("  ratio Lapse/bare, overall", _num(figures["ratio_overall"]), "", ""))
    for name, key in (("approval-to-grant latency", "approval_to_grant_s"), ("revoke lag", "revoke_lag_s")):
        for stat in ("p50", "p99", "max"):
            if key == "approval_to_grant_s" and stat == "max":
                continue
            target = ""
            if key == "revoke_lag_s" and stat == "p99":
                target = f"<= {TARGET_REVOKE_LAG_P99_S:g} s  {_verdict(targets['revoke_lag_p99'])}"
            lines.append(row.format(f"{name} {stat}", _ms(lapse[key][stat]), _ms(bare[key][stat]), target))
    for name, key in (("create response", "create_response_s"), ("approve response", "approve_response_s")):
        lines.append(
            row.format(
                f"{name} p50 / p99",
                f"{_ms(lapse[key]['p50'])} / {_ms(lapse[key]['p99'])}",
                f"{_ms(bare[key]['p50'])} / {_ms(bare[key]['p99'])}",
                "",
            )
        )
    le, be = lapse["history_events"], bare["history_events"]
    lines.append(
        row.format(
            "history events per lifecycle",
            _num(le["median"], 0),
            _num(be["median"], 0),
            f"<= {TARGET_EVENTS}  {_verdict(targets['events'])}",
        )
    )
    lines.append(
        row.format(
            "  (sampled: min-max)",
            f"{le['min']}-{le['max']} of {len(le['samples'])}" if le["samples"] else "—",
            f"{be['min']}-{be['max']} of {len(be['samples'])}" if be["samples"] else "—",
            "",
        )
    )
    lines.append(
        row.format(
            "max arrival lateness (load generator)",
            _ms(lapse["max_arrival_lateness_s"]),
            _ms(bare["max_arrival_lateness_s"]),
            "",
        )
    )
    if "status_polls_per_lifecycle" in lapse:
        lines.append(f"  status polls per Lapse lifecycle: {lapse['status_polls_per_lifecycle']:.1f}")
    for label, run in (("Lapse", lapse), ("bare", bare)):
        if run["failures"]:
            lines.append(f"  {label} lifecycles not completed: {dict(run['failures'])}")
    for label, run in (("Lapse", lapse), ("bare", bare)):
        if run["windows"]:
            lines.append(f"  {label} p99 by arrival window (approval-to-grant / revoke lag):")
            lines.append(
                "    "
                + "  ".join(
                    f"{w['from_s']:.0f}s: {_ms(w['approval_to_grant_p99_s'])} / {_ms(w['revoke_lag_p99_s'])}"
                    for w in run["windows"]
                )
            )
    lines.append("")
    lines.append(f"  throughput: {THROUGHPUT_DEFINITION}")
    lines.append("  approval-to-grant = granted_at - the approve call's send time (UTC)")
    lines.append("  revoke lag = ended_at - expires_at (both the workflow's, from the request's status)")
    for label, run in (("Lapse", le), ("bare", be)):
        if run["mean_by_type"]:
            kinds = ", ".join(f"{k.lower()} {v:.3g}" for k, v in run["mean_by_type"].items())
            lines.append(f"  {label} history, events of each type per lifecycle (sample mean): {kinds}")

    burst = figures.get("burst")
    if burst:
        lines += [
            "",
            f"Burst: {burst['requested']} automatic grants ({AUTOMATIC_ROLE}) timed to expire together",
            f"  created {burst['created']} in {burst['creating_s']:.1f} s "
            f"(create p50 {_ms(burst['create_response_s']['p50'])}, p99 {_ms(burst['create_response_s']['p99'])}); "
            f"expired and revoked {burst['completed']}",
            f"  expires_at spread (max - min):         {_num(burst['expiry_spread_s'])} s",
            f"  drain time (last ended_at - earliest expires_at): {_num(burst['drain_s'])} s",
            f"  last ended_at - latest expires_at:     {_num(burst['after_last_expiry_s'])} s",
            f"  revoke lag p50 / p99 / max:            {_ms(burst['revoke_lag_s']['p50'])} / "
            f"{_ms(burst['revoke_lag_s']['p99'])} / {_ms(burst['revoke_lag_s']['max'])}",
        ]
        if burst["failures"]:
            lines.append(f"  not completed: {dict(burst['failures'])}")
        if burst["created_late"]:
            lines.append(
                f"  WARNING: {burst['created_late']} created less than 2 s before the target; raise --burst-hold"
            )

    lines.append("")
    errors = figures["http_errors"]
    lines.append("HTTP errors: " + (", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none"))
    for label, body in figures["http_error_examples"].items():
        lines.append(f"  e.g. {label}: {body}")
    lines += log_findings_lines(figures["log_findings"], config["data_dir"])
    return "\n".join(lines)


def log_findings_lines(findings: Mapping[str, dict[str, Any]], kept_in: str | None = None) -> list[str]:
    """The report's lines on the log findings (as ``summarise_log_findings`` gives them), naming the directory
    the logs are kept in if there is one."""
    if not findings:
        return ["Log findings: none (worker/api errors or warnings, Temporal errors)"]
    lines = [f"Log findings (kept in {kept_in}):" if kept_in else "Log findings:"]
    for name, found in findings.items():
        lines.append(f"  {name}.log: {found['count']} line(s), e.g.")
        lines += [f"    {line[:300]}" for line in found["examples"]]
    return lines


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lifecycle",
        description="Benchmark Lapse's full access-request lifecycle against a bare Temporal workflow, "
        "and the revoke of a burst of grants expiring together. Starts its own stack in a temp directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=10.0, help="lifecycles started per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long arrivals go on")
    add_driver_options(parser)
    parser.add_argument("--burst", type=int, default=500, help="grants expiring in the same second (0: no burst)")
    parser.add_argument("--burst-hold", type=float, default=60.0, help="seconds from the burst's start to its expiry")
    parser.add_argument("--burst-concurrency", type=int, default=8, help="burst creations in flight")
    parser.add_argument(
        "--history-samples", type=int, default=100, help="workflow histories to count per run, evenly spread"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="LAPSE_NAME=VALUE",
        help="a setting for Lapse's worker and API, e.g. LAPSE_MAX_PENDING_SUBMITS=32 (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each with its own ops port)")
    parser.add_argument("--skip-bare", action="store_true", help="only run Lapse (and the burst)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (kept anyway on log findings)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.hold < 1 or args.workers < 1:
        parser.error("--rate and --seconds must be positive, --hold and --workers at least 1")
    args.overrides = setting_overrides(parser, args.set)
    return args


def add_driver_options(parser: argparse.ArgumentParser) -> None:
    """What the lifecycle drivers read besides the rate: the hold, the status polls and when to give up."""
    parser.add_argument("--hold", type=int, default=2, help="grant duration in (whole) seconds")
    parser.add_argument("--poll", type=float, default=0.25, help="status poll interval, seconds")
    parser.add_argument("--poll-max", type=float, default=1.0, help="poll interval backs off up to this")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a lifecycle this long after its hold")


def setting_overrides(parser: argparse.ArgumentParser, settings: Sequence[str]) -> dict[str, str]:
    """The ``--set LAPSE_NAME=VALUE`` options as a mapping; anything else is a usage error."""
    for setting in settings:
        name, equals, _value = setting.partition("=")
        if not (equals and name.startswith("LAPSE_")):
            parser.error(f"--set {setting!r}: expected LAPSE_NAME=VALUE")
    return dict(setting.partition("=")[::2] for setting in settings)


def _temporal_version(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([command[0], "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    return "temporal (version unknown)"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def say(text: str) -> None:
    """Progress and trouble go to stderr; the report alone goes to stdout."""
    print(text, file=sys.stderr, flush=True)


def interrupt_on_signals() -> None:
    """SIGTERM, like Ctrl-C, raises ``KeyboardInterrupt``, so that the stack is stopped on the way out."""

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored


def quiet_demo_org() -> dict[str, Any]:
    """The demo organisation without its ``notifications:`` section. The benchmarks measure the request's own
    work; the demo's email goes to the mail catcher ``lapse run`` starts, which a benchmark's stack does not, so
    every notice would fail and be retried. ``bench.notifications`` sets the section it measures itself."""
    org: dict[str, Any] = yaml.safe_load(DEMO_ORG.read_text())
    org.pop("notifications", None)
    return org


@dataclass
class DataDir:
    """A benchmark's temporary directory (its stack's databases and logs), removed at the end unless kept."""

    path: Path
    keep: bool = False

    @classmethod
    def create(cls, prefix: str, keep: bool) -> DataDir:
        return cls(Path(tempfile.mkdtemp(prefix=prefix)).resolve(), keep)

    def remove_unless_kept(self, kept: str = "logs kept in") -> None:
        """Remove the directory, or say (``kept`` and the path) that it stays."""
        if self.keep:
            say(f"{kept} {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def summarise_log_findings(stack: Stack) -> dict[str, dict[str, Any]]:
    """The stack's log findings for the figures: how many lines in each log, and the first five distinct."""
    return {n: {"count": len(f), "examples": list(dict.fromkeys(f))[:5]} for n, f in stack.log_findings().items()}


def publish(text: str, figures: dict[str, Any], json_path: Path | None) -> None:
    """Print the report and, if asked for, write the figures as JSON."""
    print(text, flush=True)
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2, default=_json_default) + "\n")
        print(f"\nfigures written to {json_path}", flush=True)


def run_benchmark(
    data_dir: DataDir,
    measure: Callable[[], None],
    stop: Callable[[], None],
    *,
    keep_on_failure: bool = True,
    kept: str = "logs kept in",
) -> int:
    """Run ``measure``, then ``stop`` the stack whatever happened and remove the data directory unless it is kept.

    Returns the exit code: 0, 130 when interrupted, or 1 when ``measure`` failed (said on stderr; the directory
    is then kept, if ``keep_on_failure``).
    """
    try:
        measure()
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as error:
        say(f"benchmark failed: {type(error).__name__}: {error}")
        data_dir.keep = data_dir.keep or keep_on_failure
        return 1
    finally:
        stop()
        data_dir.remove_unless_kept(kept)


async def benchmark(stack: Stack, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    # Bare Temporal runs without Lapse's payload codec (it is the baseline); Lapse's runs are only counted
    # through this client (raw histories), never decoded, so it needs no key.
    client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
    async with api_clients(stack.api_url, connections=256) as clients:
        api = Api(clients)
        count = max(1, round(args.rate * args.seconds))
        say(f"Lapse: {count} lifecycles at {args.rate:g}/s, hold {args.hold} s…")
        lapse = await run_lapse(api, client, args)
        lapse["summary"]["status_polls_per_lifecycle"] = api.calls["GET /api/requests/{id}"] / count
        say(f"  done: {lapse['summary']['throughput']['completed']} completed")
        bare: dict[str, Any] = {"summary": summarize([], [])}
        if not args.skip_bare:
            await asyncio.sleep(2)
            say(f"bare Temporal: {count} lifecycles at {args.rate:g}/s, hold {args.hold} s…")
            bare = await run_bare(client, args)
            say(f"  done: {bare['summary']['throughput']['completed']} completed")
        burst = None
        if args.burst > 0:
            await asyncio.sleep(2)
            say(f"burst: {args.burst} grants expiring ~{args.burst_hold:g} s from now…")
            burst = await run_burst(api, args)
            say(f"  done: {burst['completed']} revoked")
    lapse_s, bare_s = lapse["summary"], bare["summary"]

    def ratio(key: str) -> float | None:
        mine, theirs = lapse_s["throughput"][key], bare_s["throughput"][key]
        return mine / theirs if mine and theirs else None

    lag_p99 = lapse_s["revoke_lag_s"]["p99"]
    events = lapse_s["history_events"]["max"]
    steady_ratio = ratio("steady")
    return {
        "lapse": lapse_s,
        "bare": bare_s,
        "ratio": steady_ratio,
        "ratio_overall": ratio("overall"),
        "throughput_definition": THROUGHPUT_DEFINITION,
        "burst": burst,
        "targets": {
            "ratio": None if steady_ratio is None else steady_ratio >= TARGET_RATIO,
            "revoke_lag_p99": None if lag_p99 is None else lag_p99 <= TARGET_REVOKE_LAG_P99_S,
            "events": None if events is None else events <= TARGET_EVENTS,
        },
        "http_calls": dict(api.calls),
        "http_errors": dict(api.errors),
        "http_error_examples": api.examples,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    data_dir = DataDir.create("lapse-bench-", args.keep)
    stack = Stack(data_dir.path, args.overrides, workers=args.workers)

    def measure() -> None:
        say(f"starting Temporal dev server, worker and API in {data_dir.path}…")
        stack.start()
        say(f"ready: Temporal {stack.settings.temporal_address}, API {stack.api_url}")
        figures = asyncio.run(benchmark(stack, args, say))
        stack.stop()
        figures["log_findings"] = summarise_log_findings(stack)
        data_dir.keep = data_dir.keep or bool(figures["log_findings"])
        figures["config"] = {
            "rate": args.rate,
            "seconds": args.seconds,
            "lifecycles": max(1, round(args.rate * args.seconds)),
            "hold": args.hold,
            "poll": args.poll,
            "poll_max": args.poll_max,
            "burst": args.burst,
            "burst_hold": args.burst_hold,
            "settings": args.overrides,
            "workers": args.workers,
            "temporal": _temporal_version(temporal_server_command(stack.settings)).replace("\n", " "),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "data_dir": str(data_dir.path) if data_dir.keep else None,
        }
        publish(report(figures), figures, args.json)

    return run_benchmark(data_dir, measure, stack.stop)


if __name__ == "__main__":
    # The workflow must come from an importable module: Temporal's sandbox re-imports it.
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.lifecycle import main as _main

    exit_code = _main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # the Temporal client can abort the interpreter at exit (sdk-python #300)

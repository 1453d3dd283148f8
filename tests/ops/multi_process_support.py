"""What the multi-process test drives: a fleet of ``lapse worker`` and ``lapse api`` processes started at once, the
traffic of many requesters and approvers spread over the APIs (a load balancer's failover when one is gone), and
the processes' ``/metrics`` read back as numbers."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.ports import free_port
from store.settings import Settings
from tests.ops.processes import LAPSE, Running, answering, process_env, started

CONCURRENCY_PER_API = 4
"""Calls in flight per API: well below its ``LAPSE_MAX_PENDING_SUBMITS`` (16), so no submit is turned away for load,
and few enough that five processes on two cores keep their workflow tasks within the 4 s task timeout (more calls
at once only queue up: the CPU is the limit)."""


# --- the processes ----------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The processes, each with the URL of its HTTP port (an API's, or a worker's ops port)."""

    workers: list[Running]
    apis: list[Running]
    worker_urls: list[str]
    api_urls: list[str]
    metrics_token: str

    @property
    def everyone(self) -> list[tuple[Running, str]]:
        return [*zip(self.workers, self.worker_urls, strict=True), *zip(self.apis, self.api_urls, strict=True)]

    def live(self) -> list[tuple[Running, str]]:
        return [(running, url) for running, url in self.everyone if running.process.poll() is None]

    async def ready(self, *, within: float = 180) -> None:
        """Every process answers ``/readyz`` 200 (it migrated, or found the schema current, and reaches Temporal)."""
        await asyncio.gather(*(answering(f"{url}/readyz", running, within=within) for running, url in self.everyone))

    async def scrape(self, url: str) -> Scrape:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"})
        assert response.status_code == 200, f"{url}/metrics: {response.status_code} {response.text[:300]}"
        return Scrape.parse(response.text)

    def logs(self) -> str:
        """The tail of every process's log, for a failure's message."""
        return "\n".join(f"--- {r.name} ---\n{r.log.read_text()[-3000:]}" for r in [*self.workers, *self.apis])


@contextlib.contextmanager
def fleet(settings: Settings, directory: Path, *, workers: int, apis: int, **env: str) -> Iterator[Fleet]:
    """``workers`` ``lapse worker`` and ``apis`` ``lapse api`` processes started at once with the same settings (each
    on its own free port), killed when the block ends if they still run."""
    token = env["LAPSE_METRICS_TOKEN"]
    worker_ports = [free_port() for _ in range(workers)]
    api_ports = [free_port() for _ in range(apis)]
    with contextlib.ExitStack() as stack:

        def start(name: str, command: str, **port: str) -> Running:
            return stack.enter_context(started(name, [LAPSE, command], process_env(settings, **env, **port), directory))

        running_workers = [
            start(f"worker-{n + 1}", "worker", LAPSE_OPS_PORT=str(p)) for n, p in enumerate(worker_ports)
        ]
        running_apis = [start(f"api-{n + 1}", "api", LAPSE_API_PORT=str(p)) for n, p in enumerate(api_ports)]
        yield Fleet(
            running_workers,
            running_apis,
            [f"http://127.0.0.1:{port}" for port in worker_ports],
            [f"http://127.0.0.1:{port}" for port in api_ports],
            token,
        )


# --- /metrics as numbers ------------------------------------------------------------------------------------


@dataclass
class Scrape:
    """One ``/metrics`` answer: each sample's value by its name and labels."""

    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none: a counter that
        never counted has no sample)."""
        return math.fsum(
            value
            for sample_labels, value in self.samples.get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples by the value of one label."""
        return {sample_labels[label]: value for sample_labels, value in self.samples.get(name, [])}

    def has(self, name: str) -> bool:
        return name in self.samples


# --- the traffic ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one call came to, and how it got there."""

    response: httpx.Response
    api: int
    """The API (index) that answered."""
    ambiguous: int = 0
    """Earlier attempts that may have been acted on: cut off after the request was sent (an API stopping), or
    answered 503 (busy, or Temporal too slow to confirm)."""

    def body(self) -> dict[str, Any]:
        return json_body(self.response)


@dataclass
class Traffic:
    """Calls to the APIs as the SSO proxy's users, spread as a load balancer would: each goes to its preferred API,
    and to the next one when that does not answer."""

    clients: list[httpx.AsyncClient]
    slots: list[asyncio.Semaphore]
    answered: Counter[str] = field(default_factory=Counter)
    """Answers by API (``api-1``...), and ``failover``: calls that went to another API than their preferred one."""
    notes: list[str] = field(default_factory=list)
    stopping: set[int] = field(default_factory=set)
    """The APIs (indexes) told to stop: answers they give from then on count as ``api-N drained``."""

    async def call(self, preferred: int, user: str, method: str, path: str, body: Any = None) -> Outcome:
        moved = ambiguous = 0
        for _attempt in range(60):
            index = (preferred + moved) % len(self.clients)
            try:
                async with self.slots[index]:
                    response = await self.clients[index].request(
                        method, path, json=body, headers={"X-Forwarded-Email": user}
                    )
            except httpx.ConnectError:  # nothing sent: that API is gone
                moved += 1
                if moved % len(self.clients) == 0:  # none answers: a moment before the next round
                    await asyncio.sleep(0.5)
                continue
            except httpx.TransportError as error:  # sent, then cut off by an API stopping: ask another
                moved += 1
                ambiguous += 1
                self.notes.append(f"{method} {path} cut off at api-{index + 1}: {error!r}")
                continue
            if response.status_code == 503 and "id" not in json_body(response):
                # Refused: a new request because this API's submits are all in flight (nothing started), anything
                # else because Temporal did not confirm it in time (it may still be carried out). Again, as told.
                ambiguous += path != "/api/requests"
                await asyncio.sleep(min(5.0, float(response.headers.get("retry-after", "1"))))
                continue
            self.answered[f"api-{index + 1}"] += 1
            self.answered["failover"] += index != preferred % len(self.clients)
            if index in self.stopping:
                self.answered[f"api-{index + 1} drained"] += 1
            return Outcome(response, index, ambiguous)
        raise AssertionError(f"{method} {path} as {user}: no API gave an answer in 60 attempts")


@contextlib.asynccontextmanager
async def traffic(api_urls: Sequence[str]) -> AsyncIterator[Traffic]:
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    timeout=90,
                    limits=httpx.Limits(max_connections=CONCURRENCY_PER_API),
                    headers={"Content-Type": "application/json"},  # as the CLI: JSON, so no CSRF token is asked
                )
            )
            for url in api_urls
        ]
        yield Traffic(clients, [asyncio.Semaphore(CONCURRENCY_PER_API) for _ in clients])


async def each_with_halfway(
    items: Sequence[Any],
    act: Callable[[int, Any], Awaitable[None]],
    halfway: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """``act`` on every item at once (the APIs' slots bound what is in flight); ``halfway`` runs once half of them
    are done, while the rest are under way, and is waited for before this returns."""
    done = 0
    middle: asyncio.Task[None] | None = None

    async def one(index: int, item: Any) -> None:
        nonlocal done, middle
        await act(index, item)
        done += 1
        if done == len(items) // 2:
            middle = asyncio.create_task(halfway())

    try:
        await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))
    except BaseException:
        if middle is not None:
            middle.cancel()
        raise
    await (middle or halfway())  # with fewer than two items, at the end


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} (a 503 from a proxy or a stopping server may carry none)."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return body
    return {}

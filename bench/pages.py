"""What the page benchmarks share: an app DB of either kind, and the server time of a GET, summarised."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from harness.postgres import PostgresServer
from store.db import engine_for


@contextmanager
def app_db(name: str, data_dir: Path) -> Iterator[str]:
    """The URL of an empty app DB: SQLite in ``data_dir``, or a database on a throwaway PostgreSQL."""
    if name == "sqlite":
        yield f"sqlite:///{data_dir / 'lapse.db'}"
        return
    server = PostgresServer().start()
    try:
        database = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{database}"
        yield url
        for engine in (engine_for(url), engine_for(url, writer=True), engine_for(url, writer=False)):
            engine.dispose()
    finally:
        server.stop()


def summary(samples: list[float]) -> dict[str, Any]:
    """Calls, p50, p95 and max, in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return {
        "calls": len(samples),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def time_get(
    http: httpx.AsyncClient,
    path: str,
    calls: int,
    *,
    headers: dict[str, str],
    check: Callable[[httpx.Response], None],
) -> dict[str, Any]:
    """``calls`` GETs of ``path`` after three that warm the caches, each answer checked; their ``summary``."""
    for _ in range(3):
        check(await http.get(path, headers=headers))
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        response = await http.get(path, headers=headers)
        samples.append(time.perf_counter() - started)
        check(response)
    return summary(samples)

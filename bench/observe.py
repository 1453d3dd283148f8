"""What the operability benchmarks (``bench.soak``, ``bench.scaling``) read from a running stack from outside it.

- **/proc**: each process's CPU time and resident memory, and the whole machine's CPU (the machine may be shared:
  its busy share says whether a figure was taken on a loaded host).
- **Prometheus text** from a worker's ops port: a histogram's buckets (summed over label sets), the change
  between two scrapes, and a quantile estimated from the buckets as Prometheus's ``histogram_quantile`` does.
- **The app DB's write lock** (SQLite): a probe thread times ``BEGIN IMMEDIATE`` on its own connection, which is
  the wait any writer from another process sees (one worker's own writers queue on a lock in the process first).
- **Files**: a SQLite database's size with its WAL and shared-memory files.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TICK = os.sysconf("SC_CLK_TCK")

Buckets = dict[float, float]
"""A histogram's cumulative counts by upper bound (``inf`` for ``+Inf``)."""


# --- /proc ------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far; None once it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (``VmRSS``); None once it is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuWindow:
    """CPU used by named processes (and the machine) between ``start`` and ``stop``."""

    pids: Mapping[str, int]
    started: float = 0.0
    seconds: float = 0.0
    used: dict[str, float] = field(default_factory=dict)
    machine_busy: float | None = None
    """Share of all the machine's cores busy in the window (every process, not only the stack's)."""
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _before: dict[str, float] = field(default_factory=dict)
    _machine: tuple[int, int] = (0, 0)

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self._before = {name: used for name, pid in self.pids.items() if (used := cpu_seconds(pid)) is not None}
        self._before["bench"] = sum(os.times()[:2])
        self._machine = machine_ticks()
        return self

    def stop(self) -> CpuWindow:
        self.seconds = time.monotonic() - self.started
        now = {name: used for name, pid in self.pids.items() if (used := cpu_seconds(pid)) is not None}
        now["bench"] = sum(os.times()[:2])
        self.used = {name: now[name] - before for name, before in self._before.items() if name in now}
        busy, total = machine_ticks()
        if total > self._machine[1]:
            self.machine_busy = (busy - self._machine[0]) / (total - self._machine[1])
        self.load_average = os.getloadavg()
        return self

    def percent(self) -> dict[str, float]:
        """Each process's CPU as a percentage of one core over the window."""
        return {name: 100 * used / self.seconds for name, used in self.used.items()} if self.seconds else {}

    def figures(self, lifecycles: int) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "cpu_percent_of_a_core": self.percent(),
            "cpu_ms_per_lifecycle": {n: 1000 * u / lifecycles for n, u in self.used.items()} if lifecycles else {},
            "machine_busy": self.machine_busy,
            "cores": os.cpu_count(),
            "load_average": self.load_average,
        }


# --- Prometheus text --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LE = re.compile(r'le="([^"]+)"')


def scrape(port: int, token: str | None = None, host: str = "127.0.0.1") -> str:
    """A worker's ``/metrics`` text (``token``: its ``LAPSE_METRICS_TOKEN``); empty if it does not answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(f"http://{host}:{port}/metrics", headers=headers, timeout=10)
        if response.status_code == 200:
            return response.text
    return ""


def samples(text: str, name: str) -> Iterable[tuple[str, float]]:
    """(labels text, value) of every sample called exactly ``name``."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            with contextlib.suppress(ValueError):
                yield match["labels"] or "", float(match["value"])


def gauge(text: str, name: str) -> float | None:
    """A gauge summed over its label sets; None when absent."""
    values = [value for _labels, value in samples(text, name)]
    return sum(values) if values else None


def histogram(text: str, name: str) -> Buckets:
    """A histogram's cumulative bucket counts, summed over its label sets (e.g. every task queue)."""
    buckets: Buckets = {}
    for labels, value in samples(text, f"{name}_bucket"):
        le = _LE.search(labels)
        if le:
            bound = float("inf") if le[1] == "+Inf" else float(le[1])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def merge(*histograms: Buckets) -> Buckets:
    total: Buckets = {}
    for buckets in histograms:
        for bound, count in buckets.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def minus(after: Buckets, before: Buckets) -> Buckets:
    """What was observed between two scrapes."""
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def quantile(buckets: Buckets, q: float) -> float | None:
    """Prometheus's ``histogram_quantile``: linear within the bucket holding the q-th observation; a quantile in
    the ``+Inf`` bucket is the highest finite bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def count(buckets: Buckets) -> float:
    return buckets.get(float("inf"), 0.0)


# --- the app DB's write lock ------------------------------------------------------------------------------------


class WriteLockProbe:
    """Times ``BEGIN IMMEDIATE`` on a SQLite app DB every ``every`` seconds from a thread of its own (and rolls
    back at once: the probe holds the lock for microseconds). Its waits are what a writer in another process
    waits for the database's one write lock, through SQLite's sleeping busy handler as the workers' do."""

    def __init__(self, db_url: str, every: float = 0.2) -> None:
        self.path = db_url.removeprefix("sqlite:///") if db_url.startswith("sqlite:///") else None
        self.every = every
        self.waits: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WriteLockProbe:
        if self.path is not None:
            self._thread = threading.Thread(target=self._run, name="write-lock-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=40)

    def _run(self) -> None:
        assert self.path is not None
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.every):
                started = time.perf_counter()
                try:
                    connection.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    self.failures += 1
                    continue
                self.waits.append(time.perf_counter() - started)
                connection.execute("ROLLBACK")
        finally:
            connection.close()


# --- files ------------------------------------------------------------------------------------------------------


def sqlite_size(path: Path) -> dict[str, int]:
    """Bytes of a SQLite database, its ``-wal`` and ``-shm`` files, and their sum (``total``)."""
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            sizes[suffix.lstrip("-") or "db"] = Path(f"{path}{suffix}").stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes

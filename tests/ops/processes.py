"""Lapse's processes as the operator runs them, for the tests here: ``lapse api`` and ``lapse worker`` (or a
worker entry of the tests' own) as subprocesses, configured through the environment, their logs in files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from store.settings import Settings
from tests.conftest import TEST_CODEC_KEY
from tests.support import eventually

LAPSE = str(Path(sys.executable).parent / "lapse")
ROOT = Path(__file__).parent.parent.parent


def process_env(settings: Settings, **more: str) -> dict[str, str]:
    """The environment a process needs to run with ``settings`` (those a test sets), and ``more``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LAPSE_")}
    env.update(
        {
            "LAPSE_DATA_DIR": str(settings.data_dir),
            "LAPSE_DATABASE_URL": settings.db_url,
            "LAPSE_TEMPORAL_ADDRESS": settings.temporal_address,
            "LAPSE_TASK_QUEUE": settings.task_queue,
            "LAPSE_CODEC_KEY": TEST_CODEC_KEY,
            "LAPSE_AUTH": settings.auth,
            "LAPSE_TRUSTED_PROXIES": ",".join(settings.trusted_proxies),
            "LAPSE_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),  # for the tests' own entries (``python -m tests.ops.slow_worker``)
            **more,
        }
    )
    return env


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code (killed after ``timeout`` seconds: the test fails on its code)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextlib.contextmanager
def started(name: str, command: list[str], env: dict[str, str], directory: Path) -> Iterator[Running]:
    """``command`` running (from ``directory``, no ``.env`` there) until the block ends; stdout and stderr in
    ``<directory>/<name>.log``."""
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    running = Running(name, process, log)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def answering(url: str, running: Running, *, status: int = 200, within: float = 90) -> httpx.Response:
    """``url``'s answer once it is ``status``; fails at once if the process has exited."""

    async def get() -> httpx.Response | None:
        if running.process.poll() is not None:
            raise AssertionError(f"{running.name} exited ({running.process.returncode}):\n{running.log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient() as http:
                return await http.get(url, timeout=5)
        return None

    response = await eventually(
        get, until=lambda r: r is not None and r.status_code == status, what=f"{url} to answer {status}", within=within
    )
    assert response is not None
    return response


def signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else str(code)

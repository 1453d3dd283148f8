"""A Lapse worker in a process of its own, for tests that kill it abruptly: ``python -m
tests.workflows.killable_worker <config.json>``.

Its ``ledger`` integration is a target double that appends each revoke it carries out to a file (which outlives
the process), so a test counts the target's calls across the worker's deaths. Marker files make the process
SIGKILL itself at a chosen moment, and are removed first, so the worker started after it does not die again:

- ``die-after-snapshot-batch``: right after a snapshot batch committed its items, before Temporal hears of it;
- ``die-on-revoke``: on a revoke, before the target is called.

A review snapshot reads ``snapshot_limit`` grants per batch here (the workflow asks for 25,000), so a few
grants make several batches.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client

from access import names
from access.connectors import DiscoveredRole, Discovery, HeldRole, Target
from access.review_runs import SnapshotInput, SnapshotResult
from activities.connectors import BUILT_IN
from activities.reviews import ReviewActivities
from store.settings import Settings
from store.temporal import data_converter
from worker import build_worker


def die_if(marker: Path) -> None:
    """SIGKILL this process if ``marker`` exists (removing it first): no clean-up, no reply to Temporal."""
    try:
        marker.unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


class FileTarget:
    """The target double: each revoke appended (and synced) to ``calls`` as ``revoke <account> <role>``."""

    discovers = False
    accounts_by_rule = True
    per_grant_accounts = False

    def __init__(self, calls: Path, markers: Path) -> None:
        self.calls, self.markers = calls, markers
        self.lock = threading.Lock()
        """Held from the kill's check to the call's record: a revoke on another thread may not reach the target
        in the instant between the kill and the process's end (its retry would call the target again, rightly:
        the ledger had not recorded it; the test kills before a call, not in the middle of one)."""

    def connector(self, _config: Any) -> FileTarget:
        return self

    def account_for(self, email: str) -> str:
        return email

    def test_connection(self) -> str:
        return "the killable worker's target double"

    def discover(self) -> Discovery:
        return Discovery(resources={}, roles=[])

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> list[HeldRole]:
        return []

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        self._record("grant", account, target)

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        self._record("extend", account, target)

    def revoke(self, account: str, target: Target) -> None:
        with self.lock:
            die_if(self.markers / "die-on-revoke")
            self._record("revoke", account, target)

    def _record(self, kind: str, account: str, target: Target) -> None:
        with self.calls.open("a") as calls:
            calls.write(f"{kind} {account} {target.path}\n")
            calls.flush()
            os.fsync(calls.fileno())


def small_snapshot_batches(limit: int, markers: Path) -> None:
    """Snapshot ``limit`` grants per batch, and die after a batch when the marker says so."""
    snapshot = ReviewActivities.snapshot_review_batch

    @activity.defn(name=names.SNAPSHOT_REVIEW_BATCH)
    def snapshot_review_batch(self: ReviewActivities, input: SnapshotInput) -> SnapshotResult:
        # Defined outside its class, the activity's input may come undecoded (its hints name ``self`` too).
        asked = SnapshotInput.model_validate(input)
        result = snapshot(self, asked.model_copy(update={"limit": limit}))
        die_if(markers / "die-after-snapshot-batch")
        return result

    ReviewActivities.snapshot_review_batch = snapshot_review_batch  # type: ignore[method-assign]


async def main(config: dict[str, Any]) -> None:
    markers, calls = Path(config["markers"]), Path(config["calls"])
    small_snapshot_batches(config["snapshot_limit"], markers)
    settings = Settings(
        data_dir=Path(config["data_dir"]),
        database_url=config["db_url"],
        temporal_address=config["temporal_address"],
        task_queue=config["task_queue"],
        codec_key=config["codec_key"],
    )
    client = await Client.connect(settings.temporal_address, data_converter=data_converter(settings))
    target = FileTarget(calls, markers)
    async with build_worker(
        client, settings, task_queue=settings.task_queue, connectors={**BUILT_IN, "ledger": target.connector}
    ):
        (markers / "ready").write_text(str(os.getpid()))
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))

"""Recorded histories must replay against today's workflow code: grants live for days, across
deployments, so a change that breaks determinism would strand every request in flight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from store.settings import Settings
from store.temporal import data_converter
from tests.conftest import TEST_CODEC_KEY
from worker import SANDBOX_RESTRICTIONS, WORKFLOWS

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 7
    recorded = {path.stem.split("-", 1)[1] for path in HISTORIES}
    assert {"birthright-sync", "directory-sync", "discovery"} <= recorded
    # The step timers; the expiry warning's timers of runs from before the scan.
    assert {"reminded-escalated", "warned-extended", "extended-near-end"} <= recorded
    # An emergency request's run starting its review (recorded before the review was started by its type name).
    assert {"break-glass-request", "break-glass-review"} <= recorded


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The recorded histories predate the payload codec: replay them as a worker in the migration window does.
    converter = data_converter(Settings(codec_key=TEST_CODEC_KEY), accept_plaintext=True)
    # The worker's own sandbox: its helpers shared across runs, as in production (worker.SANDBOX_RESTRICTIONS).
    runner = SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS)
    replayer = Replayer(
        workflows=list(WORKFLOWS), workflow_runner=runner, data_converter=converter, namespace="default"
    )
    recorded = json.loads(path.read_text())  # noqa: ASYNC240
    if "historyEventsBeforeContinue" in recorded:  # a run recorded to continue as new early
        monkeypatch.setattr("access.limits.HISTORY_EVENTS_BEFORE_CONTINUE", recorded.pop("historyEventsBeforeContinue"))
    # Since v4 the file names the workflow: its payloads are sealed for it. Older ones hold plain payloads.
    history = WorkflowHistory.from_json(recorded.pop("workflowId", path.stem), recorded)
    await replayer.replay_workflow(history)

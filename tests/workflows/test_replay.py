"""Recorded histories must replay against today's workflow code: grants live for days, across
deployments, so a change that breaks determinism would strand every request in flight."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from access.settings import Settings
from starter.temporal import data_converter
from tests.conftest import TEST_CODEC_KEY
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 7
    recorded = {path.stem.split("-", 1)[1] for path in HISTORIES}
    assert {"birthright-sync", "directory-sync", "discovery"} <= recorded


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    # The recorded histories predate the payload codec: replay them as a worker in the migration window does.
    converter = data_converter(Settings(codec_key=TEST_CODEC_KEY), accept_plaintext=True)
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=converter)
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240
    await replayer.replay_workflow(history)

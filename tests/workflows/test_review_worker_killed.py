"""A review campaign whose worker is SIGKILLed three times (after a snapshot batch committed, during a revoke
carried out at once, during a revoke carried out at close) and started again each time, on the real Temporal dev
server with the real activities: every item is decided once, no revoke reaches the target twice, no reminder is
lost or sent twice, and the campaign closes.

The worker runs in a process of its own (tests/workflows/killable_worker.py) whose target double writes each
revoke to a file, so the target's calls are counted across the worker's deaths.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from access import names
from access.review_runs import CampaignResult, ReviewCampaignInput
from access.reviews import CampaignState, ReviewDefinition
from starter.services import review_runs
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Grant, ReviewCampaign, ReviewDefinitionRow, ReviewItem
from tests.conftest import TEST_CODEC_KEY
from tests.support import eventually
from workflows.review import ReviewCampaignWorkflow

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "ada@example.com"
READ = "ledger/prod-db/read"
HOLDERS = ["grace@example.com", "linus@example.com", "alan@example.com", "barbara@example.com", "ken@example.com"]
REVOKED_AT_ONCE = ["linus@example.com", "ken@example.com"]
"""Their reviewers decide revoke and submit; the others nobody decides, and the default revokes them at close."""


class KillableWorker:
    """The worker process: started, waited for, found dead (it kills itself on a marker), started again."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        self.calls = tmp_path / "target-calls"
        self.calls.touch()
        self.log = tmp_path / "worker.log"
        self.config = tmp_path / "worker.json"
        self.config.write_text(
            json.dumps(
                {
                    "markers": str(self.markers),
                    "calls": str(self.calls),
                    "snapshot_limit": 2,
                    "data_dir": str(tmp_path),
                    "db_url": settings.db_url,
                    "temporal_address": settings.temporal_address,
                    "task_queue": settings.task_queue,
                    "codec_key": TEST_CODEC_KEY,
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.deaths = 0

    async def start(self) -> None:
        (self.markers / "ready").unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; its readiness is polled
                [sys.executable, "-m", "tests.workflows.killable_worker", str(self.config)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await eventually(
            lambda: (self.markers / "ready").exists() or self.process is None or self.process.poll() is not None,
            what="the worker process to start polling",
            within=60,
        )
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def kill_on(self, moment: str) -> None:
        (self.markers / moment).touch()

    async def died_and_restarted(self, moment: str, *, within: float = 30) -> None:
        """Wait for the worker to kill itself at ``moment``, then start another."""
        assert self.process is not None
        process = self.process
        code = await eventually(
            process.poll, until=lambda code: code is not None, what=f"the worker to die {moment}", within=within
        )
        assert code == -9, f"the worker exited {code}, not by SIGKILL:\n{self.log.read_text()[-3000:]}"
        assert not (self.markers / moment).exists()
        self.deaths += 1
        await self.start()

    def revokes(self) -> Counter[tuple[str, str]]:
        lines = [line.split() for line in self.calls.read_text().splitlines()]
        return Counter((account, role) for kind, account, role in lines if kind == "revoke")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[KillableWorker]:
    worker = KillableWorker(settings, tmp_path)
    yield worker
    worker.stop()


def define(settings: Settings, **fields: Any) -> None:
    definition = ReviewDefinition.model_validate(
        {
            "name": "killed",
            "scope": {"roles": [READ]},
            "reviewers": [{"kind": "manager"}],
            "fallback": [{"kind": "user", "name": "radia@example.com"}],
            **fields,
        }
    )
    with session_scope(settings.db_url) as session:
        session.add(
            ReviewDefinitionRow(
                name=definition.name,
                body=definition.model_dump(mode="json"),
                updated_by=ADMIN,
                updated_at=datetime.now(UTC),
            )
        )
        for email in HOLDERS:  # found in the target, made outside Lapse
            session.add(
                Grant(account=email, role=READ, user_email=email, path="external", granted_at=datetime.now(UTC))
            )


def items(settings: Settings, campaign_id: str) -> dict[str, ReviewItem]:
    with session_scope(settings.db_url, write=False) as session:
        return {
            i.user_email or "": i for i in session.exec(select(ReviewItem).where(ReviewItem.campaign_id == campaign_id))
        }


def decide_revoke(settings: Settings, campaign_id: str, holders: list[str]) -> None:
    """What a reviewer's submit records (``starter/services/review_items.py``): the decision, who, when."""
    with session_scope(settings.db_url) as session:
        for item in session.exec(
            select(ReviewItem).where(ReviewItem.campaign_id == campaign_id, col(ReviewItem.user_email).in_(holders))
        ):
            item.state, item.decision, item.comment = "decided", "revoke", "no longer on the team"
            item.decided_by, item.decided_at = item.reviewer, datetime.now(UTC)
            session.add(item)


def audit(settings: Settings, *actions: str) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        return list(
            session.exec(select(AuditEvent).where(col(AuditEvent.action).in_(actions)).order_by(col(AuditEvent.id)))
        )


async def test_a_worker_killed_during_the_snapshot_and_during_revokes_repeats_nothing_and_loses_nothing(
    env: WorkflowEnvironment, settings: Settings, worker_process: KillableWorker
) -> None:
    # Revokes decided by reviewers go at once; what nobody decided is revoked by default at close. The deadline
    # leaves time for the kills before it; two reminders, one well before the deadline and one at it.
    define(settings, deadline="PT75S", reminders=["PT55S", "PT0S"], default="revoke", revoke="at_once")
    await worker_process.start()
    worker_process.kill_on("die-after-snapshot-batch")
    campaign_id = names.review_campaign_id("killed", datetime.now(UTC))
    handle = await env.client.start_workflow(
        ReviewCampaignWorkflow.run,
        ReviewCampaignInput(definition="killed", started_by=ADMIN, campaign_id=campaign_id),
        id=names.review_workflow_id(campaign_id),
        task_queue=settings.task_queue,
    )

    # 1. Killed after the first snapshot batch (2 of 5 grants) committed: the next worker resumes after it.
    await worker_process.died_and_restarted("die-after-snapshot-batch")
    await eventually(
        lambda: items(settings, campaign_id) if _state(settings, campaign_id) == "open" else {},
        until=lambda found: len(found) == len(HOLDERS),
        what="the campaign to open with every holder's item",
        within=60,
    )

    # 2. Two revokes submitted, carried out at once; killed on the first call to the target.
    worker_process.kill_on("die-on-revoke")
    decide_revoke(settings, campaign_id, REVOKED_AT_ONCE)
    await review_runs.submitted(env.client, settings, campaign_id)
    await worker_process.died_and_restarted("die-on-revoke")
    await eventually(
        lambda: {h: i.outcome for h, i in items(settings, campaign_id).items() if h in REVOKED_AT_ONCE},
        until=lambda outcomes: set(outcomes.values()) == {"revoked"},
        what="the revokes decided by reviewers to be carried out, with proof",
        within=60,
    )
    assert _state(settings, campaign_id) == "open", "the deadline came before the test could go on: lengthen it"

    # 3. At the deadline the default revokes the rest; killed on the first of those calls to the target.
    worker_process.kill_on("die-on-revoke")
    await worker_process.died_and_restarted("die-on-revoke", within=120)
    result: CampaignResult = await handle.result(rpc_timeout=timedelta(seconds=120))
    assert result.state is CampaignState.CLOSED and worker_process.deaths == 3

    # Every item decided once, by its reviewer or by the default, and revoked with its proof.
    found = items(settings, campaign_id)
    assert sorted(found) == sorted(HOLDERS)
    for holder, item in found.items():
        by_default = holder not in REVOKED_AT_ONCE
        assert (item.state, item.decision, item.outcome, item.by_default) == ("done", "revoke", "revoked", by_default)
        assert item.proof["audit_event"] and item.proof["ended_at"]
    defaults = [e for e in audit(settings, "review.default") if e.target == names.review_workflow_id(campaign_id)]
    assert [(e.details["decision"], e.details["items"]) for e in defaults] == [("revoke", 3)]

    # No revoke repeated: the target was called once per holder, and one grant.revoked each.
    assert worker_process.revokes() == Counter({(holder, READ): 1 for holder in HOLDERS})
    revoked = Counter(e.details["grant_id"] for e in audit(settings, "grant.revoked"))
    assert sorted(revoked.values()) == [1] * len(HOLDERS)
    assert revoked.keys() == {i.grant_id for i in found.values()}

    # No reminder lost or sent twice: each reminder once per reviewer with open items; at the deadline, every
    # reviewer of an item nobody decided.
    reminders = Counter(
        (e.reason, e.details["reviewer"])
        for e in audit(settings, "review.reminder")
        if e.target == names.review_workflow_id(campaign_id)
    )
    assert set(reminders.values()) == {1}, reminders
    labels = {label for label, _ in reminders}
    assert labels == {"PT55S before the deadline", "at the deadline"}, reminders
    undecided_reviewers = {i.reviewer for h, i in found.items() if h not in REVOKED_AT_ONCE}
    assert {reviewer for label, reviewer in reminders if label == "at the deadline"} == undecided_reviewers
    closed = [e for e in audit(settings, "review.closed") if e.target == names.review_workflow_id(campaign_id)]
    assert [e.details["revoked"] for e in closed] == [len(HOLDERS)]


def _state(settings: Settings, campaign_id: str) -> str | None:
    with session_scope(settings.db_url, write=False) as session:
        campaign = session.get(ReviewCampaign, campaign_id)
        return None if campaign is None else campaign.state

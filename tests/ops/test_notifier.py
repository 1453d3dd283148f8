"""``lapse notifier``: the notifications sent from a process of their own, with the workers' dispatcher off.

The request's workflow runs in the test's worker, which sends nothing; the notifier process, as an operator
starts it, sends what the workflows queued to the fake Slack, says it is ready (the app DB, and sending) and
counts what it sent on its own ops port, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from harness.ports import free_port
from store.settings import Settings
from tests.conftest import Api
from tests.fake_slack import FakeSlack
from tests.notify.test_slack_end_to_end import DEPLOY, KEN, PLATFORM, SECRET_ENV, TOKEN_ENV, prompt_to
from tests.notify.test_slack_end_to_end import slack as slack  # the fixture: the fake Slack, configured
from tests.ops.processes import LAPSE, answering, process_env, started
from tests.support import eventually


async def test_a_notifier_of_its_own_sends_what_the_workflows_queue_and_stops_on_sigterm(
    api: Api, slack: FakeSlack, settings: Settings, tmp_path: Path
) -> None:
    ops = f"http://127.0.0.1:{free_port()}"
    secrets = {TOKEN_ENV: slack.token, SECRET_ENV: "notifier-signing-secret"}  # the channel's, by env reference
    token = "notifier-scrape-token"  # behind the tests' proxy (127.0.0.1 is trusted), this machine needs it too
    environment = process_env(settings, LAPSE_OPS_PORT=ops.rpartition(":")[2], LAPSE_METRICS_TOKEN=token, **secrets)
    environment["LAPSE_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"  # nobody there: it needs no Temporal
    with started("notifier", [LAPSE, "notifier"], environment, tmp_path) as notifier:
        ready = await answering(f"{ops}/readyz", notifier)
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "sending": "ok"}

        created = await api.request(KEN, DEPLOY, "PT1H", "deploy the hotfix")
        await eventually(
            lambda: [p for p in PLATFORM if prompt_to(slack, p) is not None],
            until=lambda prompted: len(prompted) == len(PLATFORM),
            what="each approver to be asked, by the notifier",
        )
        await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "go"})
        await api.wait_for(created["id"], "active")
        await eventually(
            lambda: [m.words() for m in slack.dms_to(KEN)],
            until=lambda words: any("Granted" in w for w in words),
            what="ken to be told of the grant, by the notifier",
        )
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{ops}/metrics", headers={"Authorization": f"Bearer {token}"})).text
        sent = [line for line in metrics.splitlines() if line.startswith("lapse_notifications_sent_total{")]
        assert any('channel="slack"' in line and 'outcome="sent"' in line for line in sent), sent

        assert notifier.stop() == 0, notifier.log.read_text()
        said = notifier.log.read_text()
        assert "notifier sending" in said and "notifier stopped" in said

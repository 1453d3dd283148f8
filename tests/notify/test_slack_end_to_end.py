"""End to end through the real request workflow, the outbox's dispatcher and the fake Slack Web API: a request
DMs its approvers, one approves by button, the requester is told, and the other approvers' messages are updated
so nobody acts on a stale one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from activities.notify.dispatcher import Dispatcher
from activities.notify.slack_blocks import APPROVE, OPEN
from starter.services import slack_actions
from store.settings import Settings
from tests.conftest import Api, load_into
from tests.fake_slack import FakeSlack, Message, interaction_body, sign
from tests.notify_fixtures import configure_notifications
from tests.support import eventually

TOKEN_ENV, SECRET_ENV = "LAPSE_TEST_SLACK_TOKEN", "LAPSE_TEST_SLACK_SIGNING_SECRET"
SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
DEPLOY = "ledger/payments-api/deploy"
KEN = "ken@example.com"
PLATFORM = ("linus@example.com", "alan@example.com", "barbara@example.com")
"""The platform group: any one of them may approve ken's deploy under ``platform-peer``."""
PLATFORM_PEER: dict[str, Any] = {
    "approval_workflows": [
        {
            "name": "platform-peer",
            "rules": [
                {
                    "name": "one of platform",
                    "steps": [{"name": "platform", "approvers": [{"kind": "group", "name": "platform"}]}],
                    "max_duration": "PT8H",
                }
            ],
        }
    ],
    "assignments": [{"workflow": "platform-peer", "scope": DEPLOY}],
}


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        monkeypatch.setenv(SECRET_ENV, SIGNING_SECRET)
        section = {"token_env": TOKEN_ENV, "signing_secret_env": SECRET_ENV, "base_url": fake.base_url}
        configure_notifications(settings, {"slack": section, "default_channels": ["slack"]})
        load_into(settings, PLATFORM_PEER)
        for person in (KEN, *PLATFORM):
            fake.add_user(person)
        yield fake


def prompt_to(slack: FakeSlack, person: str) -> Message | None:
    return next((m for m in slack.dms_to(person) if m.button(APPROVE) is not None), None)


async def test_request_dms_approvers_a_button_approves_the_requester_is_told_and_other_prompts_are_updated(
    api: Api, slack: FakeSlack, settings: Settings, dispatcher: Dispatcher
) -> None:
    created = await api.request(KEN, DEPLOY, "PT1H", "deploy the hotfix")
    request_id = created["id"]

    prompts: dict[str, Message] = await eventually(
        lambda: {p: m for p in PLATFORM if (m := prompt_to(slack, p)) is not None},
        until=lambda found: len(found) == len(PLATFORM),
        what="each platform approver to be sent a message with an Approve button",
    )
    for message in prompts.values():
        assert message.button(APPROVE)["value"] == request_id  # type: ignore[index]
    assert slack.dms_to(KEN) == []  # the requester is not asked to decide

    linus = prompts["linus@example.com"]
    body = interaction_body(slack.click(linus, APPROVE, by="linus@example.com"))
    started = time.monotonic()
    response = await api.http.post("/api/slack/interactions", content=body, headers=sign(SIGNING_SECRET, body))
    assert response.status_code == 200 and time.monotonic() - started < 3
    await slack_actions.settled()

    status = await api.wait_for(request_id, "active")
    assert status["steps"][0]["decisions"][0]["approver"] == "linus@example.com"
    told = await eventually(
        lambda: [m.words() for m in slack.dms_to(KEN)],
        until=lambda words: any("Decided" in w for w in words) and any("Granted" in w for w in words),
        what="ken to be told of the decision and of the grant",
    )
    assert any("linus@example.com" in w for w in told)
    for other in ("alan@example.com", "barbara@example.com"):
        message = prompts[other]
        await eventually(
            lambda message=message: message.updates,  # type: ignore[misc]
            what=f"{other}'s message to be updated",
        )
        assert message.updates[-1]["via"] == "chat.update"
        assert [b["action_id"] for b in message.buttons()] == [OPEN]  # nothing stale to click
        assert "Decided" in message.words() and "approved" in message.words()
        assert len(slack.dms_to(other)) == 1  # updated in place, not told twice
    # The clicker's own prompt: replaced by the click's answer, and closed by the decision's notice too (in
    # either order); no button is left on it either way.
    assert "response_url" in [u["via"] for u in linus.updates]
    assert [b["action_id"] for b in linus.buttons()] in ([], [OPEN])
    assert len(slack.dms_to("linus@example.com")) == 1


async def test_slack_down_for_a_while_delays_the_message_never_the_grant(
    api: Api, slack: FakeSlack, settings: Settings, dispatcher: Dispatcher
) -> None:
    slack.failing = 3  # Slack answers 503 to the next three calls, then recovers
    created = await api.request(KEN, "ledger/payments-api/read", "PT30M")  # read-only: granted at once
    await api.wait_for(created["id"], "active")
    granted = await eventually(
        lambda: [m for m in slack.dms_to(KEN) if "Granted" in m.words()],
        what="ken's grant message, once Slack is back",
    )
    assert len(granted) == 1  # retried, and sent once
    assert len([c for c in slack.calls if c.status == 503]) == 3

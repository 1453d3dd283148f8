"""Buttons clicked in Slack (``POST /api/slack/interactions``) against real request workflows: Slack's signature
checked, the decision made as the person who clicked, and its outcome replacing the message; end to end with the
dispatcher, the fake Slack Web API and the real Temporal server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlmodel import col, select

from access.errors import Refusal
from access.notifications import Channel, Notice, NoticeKind
from activities.notify import Outgoing
from activities.notify.config import SlackSettings
from activities.notify.messages import links_for
from activities.notify.slack import SlackSender
from activities.notify.slack_blocks import APPROVE, DENY, EXTEND, OPEN
from starter.services import slack_actions
from store import notifications as outbox
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, ChatIdentity
from tests.conftest import Api, load_into
from tests.fake_slack import FakeSlack, Message, interaction_body, sign
from tests.notify_fixtures import configure_notifications
from tests.support import eventually

TOKEN_ENV, SECRET_ENV = "LAPSE_TEST_SLACK_TOKEN", "LAPSE_TEST_SLACK_SIGNING_SECRET"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PATH = "/api/slack/interactions"
DEPLOY = "ledger/payments-api/deploy"
"""Under manager-approval in the demo: ken asks, margaret (his manager) decides."""
KEN, MARGARET = "ken@example.com", "margaret@example.com"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        monkeypatch.setenv(SECRET_ENV, SIGNING_SECRET)
        configure_notifications(settings, {"slack": section(fake), "default_channels": ["slack"]})
        yield fake


def section(fake: FakeSlack) -> dict[str, Any]:
    return {"token_env": TOKEN_ENV, "signing_secret_env": SECRET_ENV, "base_url": fake.base_url}


@pytest_asyncio.fixture
async def sender(slack: FakeSlack, settings: Settings) -> AsyncIterator[SlackSender]:
    sender = SlackSender(SlackSettings.model_validate(section(slack)), settings.db_url)
    yield sender
    await sender.close()


async def prompt(
    sender: SlackSender, slack: FakeSlack, settings: Settings, kind: NoticeKind, to: str, request_id: str
) -> Message:
    """The message Lapse would send ``to`` about the request (the dispatcher's part, done by hand here)."""
    notice = Notice(
        key=f"{request_id}:{time.monotonic_ns()}:test:{kind.value}:{to}",
        kind=kind,
        recipient=to,
        subject=request_id,
        role=DEPLOY,
        requester=KEN,
        action="step.opened",
        text="A request waits.",
        at=datetime.now(UTC),
    )
    links = links_for(notice, settings.external_url)
    sent = await sender.send(Outgoing(0, Channel.SLACK, "", to, notice, links, notice.key))
    message = slack.message(sent.ref["channel"], sent.ref["ts"])
    assert message is not None
    return message


async def click(api: Api, slack: FakeSlack, message: Message, action: str, by: str, **signing: Any) -> httpx.Response:
    body = interaction_body(slack.click(message, action, by=by))
    return await api.http.post(PATH, content=body, headers=sign(SIGNING_SECRET, body, **signing))


def events(settings: Settings, action: str, target: str | None = None) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))
        if target is not None:
            query = query.where(AuditEvent.target == target)
        return list(session.exec(query))


# --- Slack's signature --------------------------------------------------------------------------------------


async def test_a_bad_signature_or_an_old_timestamp_is_refused_and_audited(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    body = interaction_body(slack.click(message, APPROVE, by=MARGARET))

    forged = sign("not-the-signing-secret", body)
    old = sign(SIGNING_SECRET, body, timestamp=int(time.time()) - 6 * 60)
    tampered = sign(SIGNING_SECRET, body)
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    for headers, sent in ((forged, body), (old, body), (tampered, body + b"&x=1"), (unsigned, body)):
        response = await api.http.post(PATH, content=sent, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"

    reasons = [e.reason for e in events(settings, "slack.interaction.refused", PATH)]
    assert any("X-Slack-Signature" in r for r in reasons)
    assert any("5 minutes" in r for r in reasons)
    assert any("did not sign" in r for r in reasons)
    await slack_actions.settled()
    status = await api.status(created["id"])
    assert status["state"] == "pending" and slack.responses == []  # nothing was decided, nothing replied


async def test_what_is_not_a_click_lapse_knows_is_refused_or_ignored(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])

    opened = await click(api, slack, message, OPEN, MARGARET)  # a link button: its browser opens the page
    assert opened.status_code == 200 and opened.content == b""
    for body in (
        b"payload=not-json",
        b"nothing=here",
        interaction_body({"type": "view_submission", "user": {"id": "U1"}}),
    ):
        response = await api.http.post(PATH, content=body, headers=sign(SIGNING_SECRET, body))
        assert response.status_code == 422, response.text
    too_big = b"payload=" + b"x" * (70 * 1024)
    assert (await api.http.post(PATH, content=too_big, headers=sign(SIGNING_SECRET, too_big))).status_code == 413
    await slack_actions.settled()
    assert (await api.status(created["id"]))["state"] == "pending"


# --- deciding from a button ---------------------------------------------------------------------------------


async def test_a_signed_click_approves_as_the_person_who_clicked_and_the_requester_is_told(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])

    started = time.monotonic()
    response = await click(api, slack, message, APPROVE, MARGARET)
    assert response.status_code == 200 and response.content == b""
    assert time.monotonic() - started < 3  # Slack's deadline for the answer (the decision comes after)

    await slack_actions.settled()
    status = await api.wait_for(created["id"], "active")
    [decision] = status["steps"][0]["decisions"]
    assert (decision["approver"], decision["approved"], decision["comment"]) == (MARGARET, True, "approved from Slack")
    # The clicked message now says what came of it, and has nothing left to click.
    assert [u["via"] for u in message.updates] == ["response_url"]
    assert [b["action_id"] for b in message.buttons()] == [OPEN]
    assert "You approved" in message.words()
    # The requester's notices are queued with the decision (the dispatcher sends them).
    with session_scope(settings.db_url, write=False) as session:
        told = {(n.recipient, n.kind) for n in outbox.about(session, created["id"])}
    assert (KEN, NoticeKind.DECIDED.value) in told and (KEN, NoticeKind.GRANTED.value) in told


async def test_a_slack_user_lapse_never_messaged_is_found_by_email_and_can_deny(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    with session_scope(settings.db_url) as session:  # as if Lapse had never looked margaret up
        for row in session.exec(select(ChatIdentity)):
            session.delete(row)

    assert (await click(api, slack, message, DENY, MARGARET)).status_code == 200
    await slack_actions.settled()
    status = await api.wait_for(created["id"], "denied")
    assert status["steps"][0]["decisions"][0]["comment"] == "denied from Slack"
    assert len(slack.calls_to("users.info")) == 1
    assert "You denied" in message.words()


async def test_someone_lapse_does_not_know_decides_nothing(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    slack.add_user("stranger@elsewhere.example")
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    assert (await click(api, slack, message, APPROVE, "stranger@elsewhere.example")).status_code == 200
    await slack_actions.settled()

    [reply] = slack.responses
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "not an active person in Lapse" in reply["text"]
    assert message.updates == []  # margaret's message still stands
    assert (await api.status(created["id"]))["state"] == "pending"
    assert events(settings, "request.approve.refused", f"access-request-{created['id']}")


@pytest.mark.parametrize(
    ("impostor", "says"),
    [
        ({"confirmed": False}, "an email Slack has not confirmed"),
        ({"team": "T0OTHER00"}, "not a member of the workspace the click came from"),
        ({"stranger": True}, "not a member of this workspace"),
        ({"bot": True}, "is a bot"),
        ({"deleted": True}, "is deactivated"),
    ],
)
async def test_a_slack_user_whose_email_slack_does_not_vouch_for_decides_nothing(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender, impostor: dict[str, Any], says: str
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    # Someone else who set their Slack profile's email to margaret's clicks her button (a forwarded message).
    other = slack.add_user(MARGARET, "mallory", **impostor)
    payload = slack.click(message, APPROVE, by=MARGARET)
    payload["user"] = {"id": other, "username": "mallory", "team_id": slack.users[other]["team_id"]}
    body = interaction_body(payload)
    assert (await api.http.post(PATH, content=body, headers=sign(SIGNING_SECRET, body))).status_code == 200
    await slack_actions.settled()

    [reply] = slack.responses
    assert reply["response_type"] == "ephemeral" and says in reply["text"] and other in reply["text"]
    assert message.updates == [] and (await api.status(created["id"]))["state"] == "pending"
    [event] = events(settings, "request.approve.refused", f"access-request-{created['id']}")
    assert event.actor == f"slack:{other}" and says in event.reason
    with session_scope(settings.db_url, write=False) as session:  # not remembered as margaret's
        assert not session.exec(select(ChatIdentity).where(ChatIdentity.external_id == other)).all()


async def test_a_response_url_that_is_not_slacks_is_refused(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    for url in ("https://attacker.example/collect", "https://hooks.slack.com.attacker.example/x", "http://127.0.0.2/x"):
        body = interaction_body({**slack.click(message, APPROVE, by=MARGARET), "response_url": url})
        response = await api.http.post(PATH, content=body, headers=sign(SIGNING_SECRET, body))
        assert response.status_code == 422 and "response_url" in response.json()["detail"], response.text
    await slack_actions.settled()
    assert (await api.status(created["id"]))["state"] == "pending" and slack.responses == []
    # Without a base_url (the real Slack) only Slack's own hooks are taken.
    real = SlackSettings.model_validate({"token_env": TOKEN_ENV, "signing_secret_env": SECRET_ENV})
    slack_actions._check_response_url(real, "https://hooks.slack.com/actions/T1/1/abc")
    with pytest.raises(Refusal, match="not Slack"):
        slack_actions._check_response_url(real, f"{slack.url}/response/x")


async def test_a_workflow_asking_for_a_recent_sign_in_refuses_a_button(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(MARGARET)
    created = await api.request(KEN, DEPLOY, "PT1H")
    # A message sent before the workflow asked for a recent sign-in still has its buttons.
    message = await prompt(sender, slack, settings, NoticeKind.DECISION_NEEDED, MARGARET, created["id"])
    load_into(settings, FRESH_SIGN_IN)
    fresh = await api.request(KEN, DEPLOY, "PT1H")
    assert (await api.status(fresh["id"]))["reauthenticate_within"] == "PT10M"
    stale = Message(**{**message.__dict__, "blocks": _for(message.blocks, fresh["id"]), "updates": []})
    slack.messages[(stale.channel, stale.ts)] = stale

    assert (await click(api, slack, stale, APPROVE, MARGARET)).status_code == 200
    await slack_actions.settled()
    [reply] = slack.responses
    assert "chat button cannot vouch" in reply["text"] and f"/requests/{fresh['id']}" in reply["text"]
    assert (await api.status(fresh["id"]))["state"] == "pending"
    assert events(settings, "request.approve.refused", f"access-request-{fresh['id']}")


FRESH_SIGN_IN: dict[str, Any] = {
    "approval_workflows": [
        {
            "name": "fresh-sign-in",
            "reauthenticate_within": "PT10M",
            "rules": [
                {
                    "name": "manager",
                    "steps": [{"name": "manager", "approvers": [{"kind": "manager"}]}],
                    "max_duration": "P1D",
                }
            ],
        }
    ],
    "assignments": [{"workflow": "fresh-sign-in", "scope": DEPLOY}],
}


def _for(blocks: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    """The same blocks with their buttons naming another request."""
    return [
        {**b, "elements": [{**e, "value": request_id} if "value" in e else e for e in b["elements"]]}
        if b.get("type") == "actions"
        else b
        for b in blocks
    ]


async def test_extend_from_a_button_asks_for_the_grants_own_length_again(
    api: Api, slack: FakeSlack, settings: Settings, sender: SlackSender
) -> None:
    slack.add_user(KEN)
    created = await api.request(KEN, "ledger/payments-api/read", "PT10M")  # read-only: up to 1 hour at once
    active = await api.wait_for(created["id"], "active")
    message = await prompt(sender, slack, settings, NoticeKind.EXPIRING_SOON, KEN, created["id"])

    assert (await click(api, slack, message, EXTEND, KEN)).status_code == 200
    await slack_actions.settled()
    extended = await eventually(
        lambda: api.status(created["id"]),
        until=lambda s: s["expires_at"] != active["expires_at"],
        what="the grant to end later",
    )
    assert datetime.fromisoformat(extended["expires_at"]) - datetime.fromisoformat(active["expires_at"]) == (
        datetime.fromisoformat("2026-01-01T00:10:00") - datetime.fromisoformat("2026-01-01T00:00:00")
    )
    assert "Extended by" in message.words() and [b["action_id"] for b in message.buttons()] == [OPEN]

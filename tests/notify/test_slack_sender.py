"""The Slack sender against the fake Slack Web API: direct messages by email, the buttons a notice may carry,
earlier prompts updated on a decision, and Slack's refusals and rate limits as the dispatcher's terms."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from access.notifications import Channel, Notice, NoticeKind
from activities.connectors.secrets import secret_policy, use_secret_policy
from activities.notify import DeliveryError, Outgoing
from activities.notify.config import SlackSettings
from activities.notify.messages import links_for
from activities.notify.slack import SlackSender
from activities.notify.slack_blocks import APPROVE, DENY, EXTEND, OPEN
from store.db import migrate, session_scope
from store.tables import ChatIdentity
from tests.fake_slack import FakeSlack, Limits

TOKEN_ENV = "LAPSE_TEST_SLACK_TOKEN"
BASE = "https://lapse.example.com"
REQUEST = "k3v9q2m7xw"
_ids = itertools.count(1)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        yield fake


@pytest.fixture
def db(app_db: str) -> str:
    migrate(app_db)
    return app_db


def slack_settings(fake: FakeSlack, **more: Any) -> SlackSettings:
    return SlackSettings.model_validate(
        {
            "token_env": TOKEN_ENV,
            "signing_secret_env": "LAPSE_TEST_SLACK_SIGNING_SECRET",
            "base_url": fake.base_url,
            **more,
        }
    )


@pytest_asyncio.fixture
async def sender(slack: FakeSlack, db: str) -> AsyncIterator[SlackSender]:
    sender = SlackSender(slack_settings(slack), db)
    yield sender
    await sender.close()


def notice(kind: NoticeKind, recipient: str | None, **details: Any) -> Notice:
    return Notice(
        key=f"{REQUEST}:{next(_ids)}:step.opened:{kind.value}:{recipient or '*'}",
        kind=kind,
        recipient=recipient,
        subject=REQUEST,
        role="ledger/prod-db/write",
        requester="alan@example.com",
        actor="linus@example.com" if kind is NoticeKind.DECIDED else "alan@example.com",
        action="request.approved" if kind is NoticeKind.DECIDED else "step.opened",
        text="Alan Turing asks for ledger/prod-db/write for 2 hours: <!channel> *now*",
        at=datetime.now(UTC),
        details=details,
    )


def outgoing(n: Notice, *, target: str = "", previous: list[dict[str, Any]] | None = None) -> Outgoing:
    return Outgoing(
        id=next(_ids),
        channel=Channel.SLACK,
        target=target,
        recipient=n.recipient,
        notice=n,
        links=links_for(n, BASE),
        key=f"{n.key}:slack:{target}",
        previous=previous or [],
    )


async def test_a_person_is_sent_a_direct_message_found_by_email_and_kept(
    slack: FakeSlack, sender: SlackSender, db: str
) -> None:
    linus = slack.add_user("linus@example.com")
    sent = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com")))

    [message] = slack.dms_to("linus@example.com")
    assert sent.ref == {"channel": message.channel, "ts": message.ts, "prompt": True}
    assert [b["action_id"] for b in message.buttons()] == [APPROVE, DENY, OPEN]
    assert message.button(APPROVE)["value"] == REQUEST  # type: ignore[index]
    assert message.button(OPEN)["url"] == f"{BASE}/requests/{REQUEST}"  # type: ignore[index]
    assert "&lt;!channel&gt;" in message.words()  # a mention in a request's words mentions nobody
    with session_scope(db, write=False) as session:
        kept = session.get(ChatIdentity, ("linus@example.com", "slack"))
        assert kept is not None and kept.external_id == linus

    await sender.send(outgoing(notice(NoticeKind.REMINDER, "linus@example.com")))
    assert len(slack.dms_to("linus@example.com")) == 2
    assert len(slack.calls_to("users.lookupByEmail")) == 1  # the id was kept: Slack is not asked again


async def test_a_workflow_asking_for_a_recent_sign_in_gets_a_link_not_buttons(
    slack: FakeSlack, sender: SlackSender
) -> None:
    slack.add_user("linus@example.com")
    slack.add_user("alan@example.com")
    await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com", reauthenticate=True)))
    await sender.send(outgoing(notice(NoticeKind.EXPIRING_SOON, "alan@example.com", reauthenticate=True)))

    [decide] = slack.dms_to("linus@example.com")
    assert [(b["action_id"], b.get("url")) for b in decide.buttons()] == [(OPEN, f"{BASE}/requests/{REQUEST}")]
    assert "value" not in decide.buttons()[0]
    [extend] = slack.dms_to("alan@example.com")
    assert [(b["action_id"], b.get("url")) for b in extend.buttons()] == [(OPEN, f"{BASE}/requests/{REQUEST}#extend")]


async def test_expiring_soon_carries_an_extend_button(slack: FakeSlack, sender: SlackSender) -> None:
    slack.add_user("alan@example.com")
    await sender.send(
        outgoing(notice(NoticeKind.EXPIRING_SOON, "alan@example.com", expires_at="2026-12-02T10:00:00+00:00"))
    )
    [message] = slack.dms_to("alan@example.com")
    assert [b["action_id"] for b in message.buttons()] == [EXTEND, OPEN]
    assert "2026-12-02 10:00 UTC" in message.words()


async def test_someone_slack_does_not_know_is_skipped_and_not_asked_about_again(
    slack: FakeSlack, sender: SlackSender
) -> None:
    first = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "nobody@example.com")))
    second = await sender.send(outgoing(notice(NoticeKind.REMINDER, "nobody@example.com")))
    assert first.skipped and "nobody@example.com" in first.skipped
    assert second.skipped
    assert len(slack.calls_to("users.lookupByEmail")) == 1


async def test_a_decision_updates_the_other_approvers_earlier_prompts(slack: FakeSlack, sender: SlackSender) -> None:
    slack.add_user("frances@example.com")
    slack.add_user("alan@example.com")
    prompt = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "frances@example.com")))
    reminder = await sender.send(outgoing(notice(NoticeKind.REMINDER, "frances@example.com")))

    decided = notice(NoticeKind.DECIDED, "frances@example.com", approved=True, comment="fine by me")
    sent = await sender.send(outgoing(decided, previous=[prompt.ref, reminder.ref, {"channel": "D1", "ts": "1.2"}]))

    assert sent.ref["updated"] == 2
    messages = slack.dms_to("frances@example.com")
    assert len(messages) == 2  # updated in place: no third message
    for message in messages:
        assert [b["action_id"] for b in message.buttons()] == [OPEN]  # nothing left to click on
        assert "fine by me" in message.words() and "approved" in message.words()
    # The requester is told in a message of their own.
    await sender.send(outgoing(notice(NoticeKind.DECIDED, "alan@example.com", approved=True)))
    assert len(slack.dms_to("alan@example.com")) == 1


async def test_a_configured_channel_gets_links_only(slack: FakeSlack, sender: SlackSender) -> None:
    slack.add_channel("access-requests")
    sent = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, None), target="#access-requests"))
    [message] = slack.in_channel("access-requests")
    assert [b["action_id"] for b in message.buttons()] == [OPEN]
    assert sent.ref["prompt"] is False

    slack.add_channel("elsewhere", member=False)
    with pytest.raises(DeliveryError) as outside:
        await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, None), target="#elsewhere"))
    assert outside.value.permanent and "not_in_channel" in str(outside.value)


async def test_a_rate_limit_is_a_retry_after_slacks_retry_after(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeSlack(limits=Limits(post_per_channel=0.2, post_burst=1)) as slack:
        monkeypatch.setenv(TOKEN_ENV, slack.token)
        slack.add_user("linus@example.com")
        sender = SlackSender(slack_settings(slack), db)
        try:
            await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com")))
            with pytest.raises(DeliveryError) as limited:
                await sender.send(outgoing(notice(NoticeKind.REMINDER, "linus@example.com")))
        finally:
            await sender.close()
    assert not limited.value.permanent
    assert limited.value.retry_after is not None and 1 <= limited.value.retry_after <= 5
    assert slack.calls_to("chat.postMessage", ok=False)[0].status == 429


async def test_slack_down_or_a_wrong_token_is_tried_again(
    slack: FakeSlack, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack.add_user("linus@example.com")
    slack.failing = 1
    sender = SlackSender(slack_settings(slack), db)
    try:
        with pytest.raises(DeliveryError) as down:
            await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com")))
        assert not down.value.permanent
        await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com")))
    finally:
        await sender.close()
    assert len(slack.dms_to("linus@example.com")) == 1

    monkeypatch.setenv(TOKEN_ENV, "xoxb-not-the-token")
    wrong = SlackSender(slack_settings(slack), db)
    try:
        with pytest.raises(DeliveryError) as refused:
            await wrong.send(outgoing(notice(NoticeKind.REMINDER, "linus@example.com")))
    finally:
        await wrong.close()
    assert "invalid_auth" in str(refused.value) and "xoxb-not-the-token" not in str(refused.value)


async def test_direct_messages_turned_off_are_skipped(slack: FakeSlack, db: str) -> None:
    sender = SlackSender(slack_settings(slack, direct_messages=False), db)
    try:
        sent = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED, "linus@example.com")))
    finally:
        await sender.close()
    assert sent.skipped and "direct_messages" in sent.skipped
    assert slack.calls == []


async def test_long_words_stay_within_block_kits_limits(slack: FakeSlack, sender: SlackSender) -> None:
    slack.add_user("alan@example.com")
    long = notice(NoticeKind.DECIDED, "alan@example.com", approved=False, comment="x" * 10_000)
    await sender.send(outgoing(long.model_copy(update={"text": "y" * 10_000, "role": "r" * 500})))
    [message] = slack.dms_to("alan@example.com")  # the fake refuses what Slack refuses: it was taken
    assert "x" * 400 in message.words()


async def test_a_base_url_the_host_policy_refuses_gets_no_token(
    slack: FakeSlack, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LAPSE_INTEGRATION_HOSTS`` holds for Slack too: an admin pointing ``base_url`` elsewhere (with any
    ``LAPSE_`` secret as the "token") sends that secret nowhere; the send fails for good, saying why."""
    policy = secret_policy()
    use_secret_policy(dataclasses.replace(policy, hosts=("slack.com",)))
    try:
        refused = SlackSender(slack_settings(slack), db)
        with pytest.raises(DeliveryError, match="base_url refused") as raised:
            await refused.send(outgoing(notice(NoticeKind.GRANTED, "alan@example.com")))
        assert raised.value.permanent
        assert slack.calls == []
        await refused.close()
    finally:
        use_secret_policy(policy)

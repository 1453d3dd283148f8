"""Teams through a local HTTP receiver standing in for a Workflows webhook: a valid Adaptive Card 1.5 whose
actions only open Lapse, with people's words shown as typed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from access.notifications import Channel, NoticeKind
from activities.notify import DeliveryError
from activities.notify.config import TeamsWebhook
from activities.notify.teams import TeamsSender
from tests.notify.receivers import HOSTILE, HttpReceiver, http_receiver, notice, outgoing, secrets_dir

__all__ = ["http_receiver", "secrets_dir"]  # fixtures
pytestmark = pytest.mark.usefixtures("secrets_dir")

# What Adaptive Cards 1.5 defines for the elements Lapse uses (microsoft/AdaptiveCards schemas/src): each
# element's required and allowed properties, and the enumerations' values (case-insensitive).
ELEMENTS: dict[str, tuple[set[str], set[str]]] = {
    "Container": ({"items"}, {"style", "bleed", "spacing", "separator", "id", "isVisible", "minHeight"}),
    "RichTextBlock": ({"inlines"}, {"horizontalAlignment", "spacing", "separator", "id", "isVisible"}),
    "TextBlock": ({"text"}, {"weight", "size", "wrap", "isSubtle", "color", "spacing", "separator", "maxLines"}),
}
INLINE = ({"text"}, {"weight", "size", "color", "isSubtle", "italic", "strikethrough", "highlight", "fontType"})
ENUMS = {
    "style": {"default", "emphasis", "good", "attention", "warning", "accent"},
    "weight": {"default", "lighter", "bolder"},
    "size": {"default", "small", "medium", "large", "extralarge"},
}
ACTION_STYLES = {"default", "positive", "destructive"}


def check_element(element: dict[str, Any]) -> list[str]:
    """The text of every TextRun in ``element``, after checking it is a well-formed 1.5 element."""
    kind = element.get("type")
    assert kind in ELEMENTS, f"an element Lapse does not use: {kind}"
    required, optional = ELEMENTS[kind]
    assert required <= element.keys() <= required | optional | {"type"}, element
    for name in element.keys() & ENUMS.keys():
        assert element[name].lower() in ENUMS[name], (name, element[name])
    texts: list[str] = []
    for item in element.get("items", []):
        texts += check_element(item)
    for inline in element.get("inlines", []):
        assert inline["type"] == "TextRun", "TextRun: Markdown is not supported, so a comment cannot make a link"
        assert INLINE[0] <= inline.keys() - {"type"} <= INLINE[0] | INLINE[1]
        for name in inline.keys() & ENUMS.keys():
            assert inline[name].lower() in ENUMS[name]
        assert isinstance(inline["text"], str)
        texts.append(inline["text"])
    return texts


def check_card(message: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """A Workflows webhook message holding one valid Adaptive Card 1.5: its texts and actions."""
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"], "a card says something"
    texts = [text for element in card["body"] for text in check_element(element)]
    for action in card["actions"]:
        assert action.keys() <= {"type", "title", "url", "style"}
        assert action["type"] == "Action.OpenUrl", "a card only links to Lapse; it never decides"
        assert action["url"].startswith("https://lapse.example.com/") and action["title"]
        assert action.get("style", "default") in ACTION_STYLES
    return texts, card["actions"]


def webhook(**more: Any) -> TeamsWebhook:
    return TeamsWebhook.model_validate({"name": "access", "url_env": "LAPSE_TEAMS_URL", **more})


@pytest.fixture(autouse=True)
def teams_url(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> str:
    url = http_receiver.url + "?sig=signature-in-the-url-is-a-secret"
    monkeypatch.setenv("LAPSE_TEAMS_URL", url)
    return url


@pytest.mark.parametrize("kind", list(NoticeKind))
async def test_every_kind_is_a_valid_card_whose_actions_only_open_lapse(
    http_receiver: HttpReceiver, kind: NoticeKind
) -> None:
    http_receiver.status = 202  # what a Workflows webhook answers
    told = notice(kind, recipient=None, approved=True, comment="looks fine", expires_at="2026-12-01T10:30:00+00:00")
    sent = await TeamsSender(webhook()).send(outgoing(told, channel=Channel.TEAMS, target="access"))

    assert sent.ref == {"status": 202}
    (got,) = http_receiver.received
    assert got.path.endswith("sig=signature-in-the-url-is-a-secret")
    texts, actions = check_card(got.json())
    assert texts[1] == told.text
    if kind not in (NoticeKind.REVIEW_ASSIGNED, NoticeKind.REVIEW_REMINDER, NoticeKind.TEST):  # about no role
        assert "ledger/payments-api/deploy" in texts[0]
    assert len({action["url"] for action in actions}) == len(actions)


async def test_decision_needed_links_to_the_request_and_approvals(http_receiver: HttpReceiver) -> None:
    await TeamsSender(webhook()).send(outgoing(notice(recipient=None), channel=Channel.TEAMS, target="access"))
    _, actions = check_card(http_receiver.received[0].json())
    assert [(a["title"], a["url"]) for a in actions] == [
        ("Decide", "https://lapse.example.com/requests/req-0123456789abcdef"),
        ("Approvals", "https://lapse.example.com/approvals"),
    ]


async def test_hostile_text_is_shown_as_typed_and_bounded(http_receiver: HttpReceiver) -> None:
    told = notice(NoticeKind.DECIDED, recipient=None, comment=HOSTILE)
    await TeamsSender(webhook()).send(outgoing(told, channel=Channel.TEAMS, target="access"))
    got = http_receiver.received[0]
    texts, actions = check_card(got.json())
    comment = texts[texts.index("Comment: ") + 1]
    assert comment.startswith("'=HYPERLINK(") and comment.endswith("…") and len(comment) <= 500
    assert "\u202e" not in comment and "\n" not in comment
    assert all("evil.example" not in action["url"] for action in actions)
    assert len(got.body) < 28_000


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (429, False), (400, True), (404, True)])
async def test_failures_are_retried_or_permanent_and_never_quote_the_url(
    http_receiver: HttpReceiver, teams_url: str, status: int, permanent: bool
) -> None:
    http_receiver.status = status
    with pytest.raises(DeliveryError) as failed:
        await TeamsSender(webhook()).send(outgoing(notice(recipient=None), channel=Channel.TEAMS, target="access"))
    assert failed.value.permanent is permanent
    assert "signature-in-the-url" not in str(failed.value) and "access" in str(failed.value)


async def test_the_url_is_read_from_a_file_by_reference(
    http_receiver: HttpReceiver, teams_url: str, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAPSE_TEAMS_URL")
    with pytest.raises(DeliveryError) as missing:
        await TeamsSender(webhook()).send(outgoing(notice(recipient=None), channel=Channel.TEAMS))
    assert missing.value.permanent and "LAPSE_TEAMS_URL" in str(missing.value)
    (secrets_dir / "teams-url").write_text(teams_url + "\n")
    await TeamsSender(webhook(url_env=None, url_file="teams-url")).send(
        outgoing(notice(recipient=None), channel=Channel.TEAMS)
    )
    assert len(http_receiver.received) == 1

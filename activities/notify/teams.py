"""Microsoft Teams: each notice as an Adaptive Card posted through a Teams Workflows webhook.

A Workflows webhook ("Post to a channel when a webhook request is received") takes a message whose attachment
is an Adaptive Card and posts it to a channel or chat: no person, so the card is a broadcast, and its actions
only open Lapse's pages (``Action.OpenUrl``): a card never decides, whoever clicks. People's words go in
``TextRun`` elements, which Teams shows as typed (no Markdown, so a comment cannot make a link). The webhook's
URL carries its own signature: it is a secret, resolved when sending and never shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from access.connectors import ConnectorError
from access.notifications import Channel, NoticeKind
from activities.connectors.secrets import secret
from activities.notify import DeliveryError, Outgoing, Sent
from activities.notify.config import TeamsWebhook
from activities.notify.messages import Message, message_for
from activities.notify.posting import checked_url, client, post

CARD_VERSION = "1.5"
MAX_BYTES = 28_000
"""Teams refuses a message over about 28 KB; a card over this loses its fields first (the link stays)."""

_STYLES = {
    NoticeKind.BREAK_GLASS: "attention",
    NoticeKind.TROUBLE: "attention",
    NoticeKind.BREAK_GLASS_REVIEW: "warning",
    NoticeKind.ESCALATED: "warning",
    NoticeKind.EXPIRING_SOON: "warning",
}
"""A container style for the kinds people should not scroll past; the others are plain ("emphasis")."""
_DECIDING = (NoticeKind.DECISION_NEEDED, NoticeKind.REMINDER, NoticeKind.ESCALATED)


def card(outgoing: Outgoing) -> dict[str, Any]:
    """The Adaptive Card for ``outgoing``: title, sentence, fields, and link-out actions only."""
    notice = outgoing.notice
    message = message_for(notice, outgoing.links)
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "Container",
                "style": _STYLES.get(notice.kind, "emphasis"),
                "bleed": True,
                "items": [_runs((message.title, {"weight": "Bolder", "size": "Medium"}))],
            },
            _runs((message.text, {})),
            *(_runs((f"{label}: ", {"weight": "Bolder"}), (value, {})) for label, value in message.fields),
        ],
        "actions": _actions(message, outgoing),
    }


def envelope(card_body: dict[str, Any]) -> dict[str, Any]:
    """The message a Workflows webhook takes: one Adaptive Card attachment."""
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card_body}
        ],
    }


def encode(outgoing: Outgoing) -> bytes:
    """The request body, within Teams' size limit."""
    body = card(outgoing)
    encoded = json.dumps(envelope(body), ensure_ascii=False).encode()
    if len(encoded) > MAX_BYTES:  # cannot happen with messages' bounds; kept so a new field cannot break a send
        body["body"] = body["body"][:2]
        encoded = json.dumps(envelope(body), ensure_ascii=False).encode()
    return encoded


class TeamsSender:
    """Posts each notice as an Adaptive Card to one configured Teams Workflows webhook."""

    channel = Channel.TEAMS

    def __init__(self, webhook: TeamsWebhook, *, http: httpx.AsyncClient | None = None) -> None:
        self.webhook = webhook
        self._http = http or client()
        self._own_http = http is None

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        return False  # each message stands alone

    async def send(self, outgoing: Outgoing) -> Sent:
        what = f"Teams webhook {self.webhook.name}"
        try:
            url = secret(env=self.webhook.url_env, file=self.webhook.url_file, what=f"the URL of {what}", field="url")
        except ConnectorError as error:
            raise DeliveryError(str(error), permanent=True) from None
        parsed = checked_url(url, field=f"{what} url", secrets=[url])
        response = await post(self._http, parsed, encode(outgoing), {}, what=what, secrets=[url])
        return Sent(ref={"status": response.status_code})

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _runs(*runs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A RichTextBlock of TextRuns: text shown exactly as given, with no Markdown."""
    return {
        "type": "RichTextBlock",
        "inlines": [{"type": "TextRun", "text": text, **style} for text, style in runs],
    }


def _actions(message: Message, outgoing: Outgoing) -> list[dict[str, Any]]:
    actions = [{"type": "Action.OpenUrl", "title": message.action, "url": message.action_url, "style": "positive"}]
    if outgoing.notice.kind in _DECIDING:
        actions.append({"type": "Action.OpenUrl", "title": "Approvals", "url": outgoing.links.approvals})
    elif message.action_url != outgoing.links.request:
        actions.append({"type": "Action.OpenUrl", "title": "Open the request", "url": outgoing.links.request})
    return actions

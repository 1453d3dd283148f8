"""Slack messages in Block Kit: what a notice looks like in Slack, and which buttons it carries.

The words come from ``activities.notify.messages`` (shared by every channel); here they become a header, a
sentence, fields and an actions block, within Block Kit's documented limits. A button decides (approve, deny,
extend) only in a person's own direct message and only where the request's approval workflow asks for no recent
sign-in (``notice.details["reauthenticate"]``): otherwise the one button is a link to the request's page, which
does the fresh sign-in. Whatever a person typed is escaped for mrkdwn (``&``, ``<``, ``>``), so a comment can
make no link and mention nobody.
"""

from __future__ import annotations

from typing import Any

from access.notifications import Notice, NoticeKind
from activities.notify import Links
from activities.notify.messages import Message, message_for, plain

APPROVE, DENY, EXTEND, OPEN = "lapse.approve", "lapse.deny", "lapse.extend", "lapse.open"
"""The buttons' ``action_id``s; a deciding button's ``value`` is the request's id."""
ACTIONS_BLOCK = "lapse.actions"

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
BUTTON_TEXT_LIMIT = 75
URL_LIMIT = 3000
FALLBACK_LIMIT = 4000
"""The top-level ``text`` (notifications and screen readers): Slack advises at most 4,000 characters."""

DECIDING = frozenset({NoticeKind.DECISION_NEEDED, NoticeKind.REMINDER, NoticeKind.ESCALATED})
"""Kinds whose message asks its reader to decide: Approve and Deny, where that is safe."""
PROMPTS = DECIDING | {NoticeKind.EXPIRING_SOON}
"""Kinds whose message carries a call to act: a later decision or end updates it, so nobody acts on it stale."""


def escape(text: str) -> str:
    """``text`` for mrkdwn: the three characters Slack asks apps to escape, so it shows as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain_text(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": False}


def button(
    text: str, action_id: str, *, value: str | None = None, url: str | None = None, style: str | None = None
) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "button", "text": _plain_text(text, BUTTON_TEXT_LIMIT), "action_id": action_id}
    if value is not None:
        element["value"] = value
    if url is not None:
        element["url"] = url[:URL_LIMIT]
    if style is not None:
        element["style"] = style
    return element


def layout(
    title: str, text: str, fields: tuple[tuple[str, str], ...] | list[tuple[str, str]], buttons: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """A message's fallback text and blocks: a header, the sentence, the fields, the buttons. Every argument is
    plain text (``messages.plain``): this escapes it for mrkdwn and cuts it to Block Kit's limits."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain_text(title, HEADER_LIMIT)},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(text), SECTION_LIMIT) or " "}},
    ]
    shown = [
        {"type": "mrkdwn", "text": _cut(f"*{escape(label)}*\n{escape(value)}", FIELD_LIMIT)}
        for label, value in list(fields)[:MAX_FIELDS]
    ]
    if shown:
        blocks.append({"type": "section", "fields": shown})
    if buttons:
        blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons})
    return _cut(escape(f"{title}: {text}"), FALLBACK_LIMIT), blocks


def decides_by_button(notice: Notice, *, direct: bool) -> bool:
    """Whether ``notice``'s message may carry buttons that act: in a person's own direct message, where the
    request's workflow asks for no recent sign-in (a channel's readers, or such a workflow, get a link)."""
    return direct and notice.recipient is not None and not notice.details.get("reauthenticate")


def notice_message(
    notice: Notice, links: Links, *, direct: bool, closed: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and blocks for ``notice``: buttons that decide or extend where that is safe, else a
    link to where it is done. ``closed``: the message replaces earlier prompts, so it carries only a link."""
    message = message_for(notice, links)
    return layout(message.title, message.text, message.fields, _buttons(notice, message, direct=direct and not closed))


def _buttons(notice: Notice, message: Message, *, direct: bool) -> list[dict[str, Any]]:
    link = button(message.action, OPEN, url=message.action_url)
    if not decides_by_button(notice, direct=direct):
        return [link]
    if notice.kind in DECIDING:
        return [
            button("Approve", APPROVE, value=notice.subject, style="primary"),
            button("Deny", DENY, value=notice.subject, style="danger"),
            button("Open the request", OPEN, url=message.action_url),
        ]
    if notice.kind is NoticeKind.EXPIRING_SOON:
        return [
            button("Extend", EXTEND, value=notice.subject, style="primary"),
            button("Open the request", OPEN, url=message.action_url),
        ]
    return [link]


def outcome(title: str, text: str, fields: list[tuple[str, str]], page: str) -> dict[str, Any]:
    """What replaces a message after its button was clicked (posted to the interaction's ``response_url``):
    what happened, and a link to the request; no button acts again."""
    fallback, blocks = layout(
        plain(title, HEADER_LIMIT),
        plain(text, 500),
        [(plain(label, 50), plain(value)) for label, value in fields],
        [button("Open the request", OPEN, url=page)],
    )
    return {"replace_original": True, "text": fallback, "blocks": blocks}


def ephemeral(text: str, page: str | None = None) -> dict[str, Any]:
    """A reply only the clicker sees, the message left as it was (a refusal: the button still stands for the
    others it was sent to, and a link to do it in the web UI)."""
    said = plain(text, 1000)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": escape(said) or " "}}]
    if page is not None:
        blocks.append(
            {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": [button("Open the request", OPEN, url=page)]}
        )
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(said), "blocks": blocks}

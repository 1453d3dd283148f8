"""Slack's Block Kit and Teams' Adaptive Cards drawn as plain parts a page can show: an approximation of how
each app shows a message, made from the JSON Lapse sends (``notification_previews``).

Only what Lapse's messages use is drawn (headers, text, fields, buttons, containers); any other part is named,
never silently left out. Text stays text: the page escapes it, so a message's words cannot become markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Run:
    """A stretch of text shown one way."""

    text: str
    bold: bool = False
    large: bool = False


Line = tuple[Run, ...]


@dataclass(frozen=True)
class Button:
    label: str
    style: str = "default"
    """``primary``, ``danger`` or ``default``."""
    url: str | None = None
    """Where a link button goes (None: the button sends its action to Lapse)."""


@dataclass(frozen=True)
class Piece:
    """One part of a drawn chat message: a header, text, fields, buttons, a box around others, or a part Lapse
    does not draw (named, so the preview never hides that it left something out)."""

    type: Literal["header", "text", "fields", "buttons", "box", "other"]
    lines: tuple[Line, ...] = ()
    fields: tuple[tuple[Line, ...], ...] = ()
    buttons: tuple[Button, ...] = ()
    style: str = ""
    children: tuple[Piece, ...] = ()
    note: str = ""


# --- drawing Slack's Block Kit and Teams' Adaptive Cards ------------------------------------------------------

_BOLD = re.compile(r"\*([^*\n]+)\*")


def mrkdwn(text: str) -> tuple[Line, ...]:
    """Slack mrkdwn as lines of runs: ``*bold*`` and line breaks; the three escaped characters shown as typed
    (the page escapes them again for HTML)."""
    plain = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    lines: list[Line] = []
    for line in plain.split("\n"):
        parts = _BOLD.split(line)  # even: plain text, odd: what was between asterisks
        lines.append(tuple(Run(part, bold=i % 2 == 1) for i, part in enumerate(parts) if part))
    return tuple(lines)


def _text_of(element: Any) -> str:
    return str(element.get("text", "")) if isinstance(element, dict) else ""


def draw_slack(blocks: list[dict[str, Any]]) -> tuple[Piece, ...]:
    """Block Kit blocks as pieces: header, section text and fields, actions' buttons; anything else named."""
    pieces: list[Piece] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            pieces.append(Piece("header", lines=((Run(_text_of(block.get("text")), bold=True, large=True),),)))
        elif kind == "section":
            text = block.get("text")
            if isinstance(text, dict):
                lines = mrkdwn(_text_of(text)) if text.get("type") == "mrkdwn" else ((Run(_text_of(text)),),)
                pieces.append(Piece("text", lines=lines))
            if block.get("fields"):
                pieces.append(Piece("fields", fields=tuple(mrkdwn(_text_of(f)) for f in block["fields"])))
        elif kind == "actions":
            buttons = [e for e in block.get("elements", []) if isinstance(e, dict) and e.get("type") == "button"]
            pieces.append(
                Piece(
                    "buttons",
                    buttons=tuple(
                        Button(_text_of(b.get("text")), str(b.get("style", "default")), b.get("url")) for b in buttons
                    ),
                )
            )
        else:
            pieces.append(Piece("other", note=f"a {kind} block, not drawn here"))
    return tuple(pieces)


_ACTION_STYLES = {"positive": "primary", "destructive": "danger"}


def draw_adaptive_card(body: dict[str, Any]) -> tuple[Piece, ...]:
    """An Adaptive Card as pieces: containers (with their style), rich text and text blocks, fact sets and its
    ``Action.OpenUrl`` buttons; anything else named."""
    pieces = [_card_element(element) for element in body.get("body", []) if isinstance(element, dict)]
    actions = [a for a in body.get("actions", []) if isinstance(a, dict)]
    if actions:
        buttons = tuple(
            Button(
                str(a.get("title", "")),
                _ACTION_STYLES.get(str(a.get("style")), "default"),
                a.get("url") if a.get("type") == "Action.OpenUrl" else None,
            )
            for a in actions
        )
        pieces.append(Piece("buttons", buttons=buttons))
    return tuple(pieces)


def _card_element(element: dict[str, Any]) -> Piece:
    kind = element.get("type")
    if kind == "Container":
        items = tuple(_card_element(i) for i in element.get("items", []) if isinstance(i, dict))
        return Piece("box", style=str(element.get("style", "default")), children=items)
    if kind == "RichTextBlock":
        runs = tuple(
            Run(str(r.get("text", "")), bold=r.get("weight") == "Bolder", large=r.get("size") in ("Medium", "Large"))
            for r in element.get("inlines", [])
            if isinstance(r, dict)
        )
        return Piece("text", lines=(runs,))
    if kind == "TextBlock":
        run = Run(
            str(element.get("text", "")),
            bold=element.get("weight") == "Bolder",
            large=element.get("size") in ("Medium", "Large"),
        )
        return Piece("text", lines=((run,),))
    if kind == "FactSet":
        facts = tuple(
            ((Run(str(f.get("title", "")), bold=True),), (Run(str(f.get("value", ""))),))
            for f in element.get("facts", [])
            if isinstance(f, dict)
        )
        return Piece("fields", fields=facts)
    return Piece("other", note=f"a {kind} element, not drawn here")

"""What each notification looks like on each channel, from a sample request: the admin page's previews and the
README's screenshots.

A sample notice is made by the same rules a real request's events go through (``access.notifications
.notices_for``), from a realistic request, then handed to the channel's own code: the email is
``activities.notify.email.compose``'s message (its HTML body is shown as it is), Slack's is the Block Kit of
``slack_blocks.notice_message``, Teams' the Adaptive Card of ``teams.card``. Lapse cannot show Slack or Teams
themselves, so it draws an approximation of those from their JSON (:class:`Piece`), and says so where shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal

from access.notifications import Channel, Notice, NoticeKind, notices_for
from access.requests import Decision, RequestState, RequestStatus, StepState, StepStatus
from access.types import Approver, ApproverKind, AuditEntry
from activities.notify import Outgoing
from activities.notify.config import EmailSettings
from activities.notify.email import compose
from activities.notify.messages import links_for
from activities.notify.slack_blocks import notice_message
from activities.notify.teams import card, envelope

PreviewChannel = Literal["email", "slack", "teams"]
PREVIEW_CHANNELS: tuple[PreviewChannel, ...] = ("email", "slack", "teams")

SAMPLE_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
"""A fixed moment, so a preview (and a screenshot made of it) is the same each time."""
REQUEST_ID = "k3v9q2m7xw"
REQUESTER, APPROVER, OTHER_APPROVER, ADMIN = (
    "alan@example.com",
    "linus@example.com",
    "grace@example.com",
    "ada@example.com",
)
ROLE = "ledger/prod-db/write"
SAMPLE_EMAIL = EmailSettings(host="smtp.example.com", sender="Lapse <lapse@example.com>")
"""The sender a preview shows when no email is configured."""


# --- sample notices ------------------------------------------------------------------------------------------


def _status(state: RequestState, step_state: StepState, *, decided: bool = False) -> RequestStatus:
    step = StepStatus(
        name="owners",
        approvers=[Approver(kind=ApproverKind.RESOURCE_OWNER)],
        quorum=1,
        eligible=[APPROVER, OTHER_APPROVER],
        state=step_state,
        opened_at=SAMPLE_AT,
        decisions=(
            [Decision(approver=APPROVER, approved=True, comment="OK for the release window", at=SAMPLE_AT)]
            if decided
            else []
        ),
    )
    granted = state is not RequestState.PENDING
    return RequestStatus(
        id=REQUEST_ID,
        requester=REQUESTER,
        role=ROLE,
        duration=timedelta(hours=2),
        justification="Migrate the invoices table for release 4.2 (CHG-1234)",
        policy="sensitive",
        rule="owners",
        state=state,
        created_at=SAMPLE_AT,
        granted_at=SAMPLE_AT if granted else None,
        expires_at=SAMPLE_AT + timedelta(hours=2) if granted else None,
        steps=[step],
    )


_PENDING = (RequestState.PENDING, StepState.OPEN)
_ACTIVE = (RequestState.ACTIVE, StepState.APPROVED)
_EVENTS: dict[NoticeKind, tuple[tuple[RequestState, StepState], AuditEntry]] = {
    NoticeKind.DECISION_NEEDED: (
        _PENDING,
        AuditEntry(actor="lapse", action="step.opened", target=REQUEST_ID, details={"step": "owners"}),
    ),
    NoticeKind.REMINDER: (
        _PENDING,
        AuditEntry(actor="lapse", action="step.reminded", target=REQUEST_ID, details={"step": "owners"}),
    ),
    NoticeKind.ESCALATED: (
        _PENDING,
        AuditEntry(
            actor="lapse",
            action="step.escalated",
            target=REQUEST_ID,
            details={"step": "owners", "escalated_to": ["group:dba-leads"]},
        ),
    ),
    NoticeKind.DECIDED: (
        _ACTIVE,
        AuditEntry(
            actor=APPROVER,
            action="request.approved",
            target=REQUEST_ID,
            reason="OK for the release window",
            details={"step": "owners"},
        ),
    ),
    NoticeKind.GRANTED: (
        _ACTIVE,
        AuditEntry(actor="lapse", action="grant.provisioned", target=REQUEST_ID, details={"account": "alan"}),
    ),
    NoticeKind.EXPIRING_SOON: (
        _ACTIVE,
        AuditEntry(
            actor="lapse",
            action="grant.expiring_soon",
            target=REQUEST_ID,
            details={"expires_at": (SAMPLE_AT + timedelta(hours=2)).isoformat()},
        ),
    ),
    NoticeKind.ENDED: (
        (RequestState.EXPIRED, StepState.APPROVED),
        AuditEntry(actor="lapse", action="grant.expired", target=REQUEST_ID),
    ),
    NoticeKind.TROUBLE: (
        (RequestState.REVOKING, StepState.APPROVED),
        AuditEntry(
            actor="lapse",
            action="grant.revoke_failing",
            target=REQUEST_ID,
            reason="prod-db.internal:5432 refused the connection",
        ),
    ),
}
"""The sample event behind each kind the request rules make, and the state its request is in then."""

_MADE_ELSEWHERE: dict[NoticeKind, tuple[str, str, str, dict[str, Any]]] = {
    NoticeKind.BREAK_GLASS: (
        "request.break_glass",
        REQUESTER,
        f"{REQUESTER} used break-glass for {ROLE}: granted at once for 1h, without approval.",
        {"reason": "INC-4711: payments failing, database locked", "state": "active"},
    ),
    NoticeKind.BREAK_GLASS_REVIEW: (
        "break_glass.review_opened",
        "lapse",
        f"{REQUESTER}'s emergency access to {ROLE} waits for your review: confirm or condemn it.",
        {"reason": "INC-4711: payments failing, database locked", "state": "active"},
    ),
    NoticeKind.REVIEW_ASSIGNED: (
        "review.assigned",
        "lapse",
        "The campaign quarterly-prod gave you 12 permissions to review by 2026-12-15.",
        {},
    ),
    NoticeKind.REVIEW_REMINDER: (
        "review.reminded",
        "lapse",
        "The campaign quarterly-prod ends 2026-12-15: 5 of your 12 permissions are still to review.",
        {},
    ),
    NoticeKind.TEST: ("notification.tested", ADMIN, "", {}),
}
"""Kinds other parts of Lapse make (break-glass, reviews, the admin page's test): built here directly."""


def sample_notice(kind: NoticeKind, *, personal: bool = True) -> Notice:
    """A realistic notice of ``kind``: to its person (``personal``) or the broadcast shared destinations get."""
    if kind in _EVENTS:
        (state, step_state), event = _EVENTS[kind]
        status = _status(state, step_state, decided=kind is NoticeKind.DECIDED)
        made = notices_for(status, [event.model_copy(update={"at": SAMPLE_AT})], 7, admins=[ADMIN])
        wanted = [n for n in made if n.kind is kind and (n.recipient is not None) is personal]
        if wanted:
            return wanted[0]
    if kind is NoticeKind.TEST:
        return channel_test_notice(ADMIN, Channel.EMAIL, "", subject="test-sample", at=SAMPLE_AT)
    action, actor, text, details = _MADE_ELSEWHERE.get(kind, ("", "lapse", "", {}))
    review = kind in (NoticeKind.REVIEW_ASSIGNED, NoticeKind.REVIEW_REMINDER)
    recipient = (OTHER_APPROVER if review else APPROVER) if personal else None
    return Notice(
        key=f"sample:{kind.value}:{recipient or '*'}",
        kind=kind,
        recipient=recipient,
        subject="quarterly-prod-20261201T000000" if review else REQUEST_ID,
        role="" if review else ROLE,
        requester="" if review else REQUESTER,
        actor=actor,
        action=action or f"sample.{kind.value}",
        text=text,
        at=SAMPLE_AT,
        details={"workflow": "sensitive", **details},
    )


def channel_test_notice(sender: str, channel: Channel, target: str, *, subject: str, at: datetime) -> Notice:
    """The notice of an admin's test of ``channel`` (``target``: a configured destination; empty: the admin's
    own direct message or email)."""
    where = f"{channel.value} destination {target}" if target else f"your {channel.value}"
    return Notice(
        key=f"{subject}:test:{sender if not target else '*'}",
        kind=NoticeKind.TEST,
        recipient=None if target else sender,
        subject=subject,
        actor=sender,
        action="notification.tested",
        text=f"{sender} sent this test from Lapse's Notifications page: {where} works.",
        at=at,
        details={"channel": channel.value, "target": target},
    )


# --- previews ------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class EmailPreview:
    subject: str
    sender: str
    to: str
    html: str
    """The HTML alternative exactly as sent."""
    text: str
    """The plain-text alternative."""


@dataclass(frozen=True)
class Preview:
    kind: NoticeKind
    channel: PreviewChannel
    notice: Notice
    email: EmailPreview | None = None
    drawn: tuple[Piece, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)
    """What the channel receives (Slack's ``chat.postMessage`` arguments, the Teams webhook's body)."""


def preview(kind: NoticeKind, channel: PreviewChannel, base_url: str, email: EmailSettings | None = None) -> Preview:
    """The sample notice of ``kind`` as ``channel`` shows it (Teams gets the broadcast: it reaches a channel)."""
    notice = sample_notice(kind, personal=channel != "teams")
    links = links_for(notice, base_url)
    outgoing = Outgoing(
        id=0,
        channel=Channel(channel),
        target="" if channel != "teams" else "access-requests",
        recipient=notice.recipient,
        notice=notice,
        links=links,
        key=f"{notice.key}:{channel}:",
    )
    if channel == "email":
        return Preview(kind, channel, notice, email=email_preview(compose(outgoing, email or SAMPLE_EMAIL)))
    if channel == "slack":
        text, blocks = notice_message(notice, links, direct=True)
        raw = {"channel": "U0123456789", "text": text, "blocks": blocks, "unfurl_links": False}
        return Preview(kind, channel, notice, drawn=draw_slack(blocks), raw=raw)
    body = card(outgoing)
    return Preview(kind, channel, notice, drawn=draw_adaptive_card(body), raw=envelope(body))


def email_preview(mail: EmailMessage) -> EmailPreview:
    html = mail.get_body(preferencelist=("html",))
    text = mail.get_body(preferencelist=("plain",))
    return EmailPreview(
        subject=str(mail["Subject"]),
        sender=str(mail["From"]),
        to=str(mail["To"]),
        html=html.get_content() if isinstance(html, EmailMessage) else "",
        text=text.get_content() if isinstance(text, EmailMessage) else "",
    )


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

"""What each notification looks like on each channel, from a sample request: the admin page's previews and the
README's screenshots.

A sample notice is made by the same rules a real request's events go through (``access.notifications
.notices_for``), from a realistic request, then handed to the channel's own code: the email is
``activities.notify.email.compose``'s message (its HTML body is shown as it is), Slack's is the Block Kit of
``slack_blocks.notice_message``, Teams' the Adaptive Card of ``teams.card``. Lapse cannot show Slack or Teams
themselves, so it draws an approximation of those from their JSON (:class:`Piece`), and says so where shown.
"""

from __future__ import annotations

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
from starter.services.message_drawing import Piece, draw_adaptive_card, draw_slack

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

_INCIDENT = "INC-4711: payments failing, the invoices table is locked"
_REVIEW_DUE = "2026-12-15T17:00:00+00:00"
_BREAK_GLASS = {"state": "active", "deadline": "2026-12-02T12:00:00+00:00", "justification": _INCIDENT}
_CAMPAIGN = {
    "campaign": "quarterly-prod-20261201T000000",
    "definition": "quarterly-prod",
    "description": "Production databases, Q4",
    "deadline": _REVIEW_DUE,
}
_MADE_ELSEWHERE: dict[NoticeKind, tuple[str, str, str, dict[str, Any]]] = {
    NoticeKind.BREAK_GLASS: (
        "break_glass.opened",
        REQUESTER,
        f"{REQUESTER} used emergency access (break-glass) to {ROLE} until 13:00 UTC, with no approval: "
        f"“{_INCIDENT}”. Its review is due by 2026-12-02 12:00 UTC.",
        {**_BREAK_GLASS, "loud": True},
    ),
    NoticeKind.BREAK_GLASS_REVIEW: (
        "break_glass.opened",
        REQUESTER,
        f"Review {REQUESTER}'s emergency access to {ROLE}: confirm or condemn it by 2026-12-02 12:00 UTC "
        "(you would have approved it; it was granted without you).",
        _BREAK_GLASS,
    ),
    NoticeKind.REVIEW_ASSIGNED: (
        "review.started",
        "lapse",
        'The access review "Production databases, Q4" gives you 12 items to review by 2026-12-15 17:00 UTC.',
        {**_CAMPAIGN, "reason": "started", "items": 12},
    ),
    NoticeKind.REVIEW_REMINDER: (
        "review.reminder",
        "lapse",
        'You have 5 items open in the access review "Production databases, Q4", due 2026-12-15 17:00 UTC.',
        {**_CAMPAIGN, "reminder": "P3D before the deadline", "open": 5},
    ),
}
"""Kinds other parts of Lapse make (``activities.break_glass``, ``activities.review_notices``), as they word them:
built here directly (their builders need a database)."""


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
        subject=str(_CAMPAIGN["campaign"]) if review else REQUEST_ID,
        role="" if review else ROLE,
        requester="" if review else REQUESTER,
        actor=actor,
        action=action or f"sample.{kind.value}",
        text=text,
        at=SAMPLE_AT,
        details=details if review else {"workflow": "sensitive", **details},
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

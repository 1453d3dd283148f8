"""The words of a notification: a title, one line and a few fields per notice kind, shared by every channel.

Email, Teams, Slack and webhooks all say the same thing in their own markup, so what a notice says is decided
here once, as plain text. Everything a person typed (a comment, a reason) and everything a name carries is
hostile until shown otherwise: :func:`plain` makes it one bounded line with no control characters and no
spreadsheet formula; each channel still escapes it for its markup (HTML, Adaptive Card text, Slack mrkdwn).
Links only lead to Lapse's pages, where deciding or extending happens (with any fresh sign-in it needs).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from access.notifications import Notice, NoticeKind
from activities.notify import Links

TITLE_LIMIT = 150
"""Subject lines people scan: a mail client shows about this much, and a card title needs no more."""
TEXT_LIMIT = 300
FIELD_LIMIT = 500
"""A comment is shown up to this long; the request's page has it all."""
MAX_FIELDS = 10

FORMULA_START = ("=", "+", "-", "@")
"""Text starting with these is a formula to a spreadsheet (a SIEM export, a ticket's CSV): shown with a
leading ``'`` as OWASP advises, so it reads the same and runs nothing."""

_UNPRINTABLE = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}
"""Control, format (bidirectional overrides, zero-width), private-use and separator characters: they
reorder or hide what a reader sees."""


@dataclass(frozen=True)
class Message:
    """What a notice says, as plain text: each channel marks it up (and escapes it) its own way."""

    title: str
    """A subject line: the kind first, then the role, so an inbox reads as a list of what needs doing."""
    text: str
    """One sentence: what happened and what the reader may do."""
    fields: tuple[tuple[str, str], ...]
    """Label and value pairs (role, requester, by whom, comment, until when), already made plain."""
    action: str
    """The label of the one link that matters (``Decide``, ``Extend``, ``Open the request``)."""
    action_url: str
    """Where that link goes (one of the notice's :class:`Links`)."""


def plain(value: Any, limit: int = FIELD_LIMIT) -> str:
    """``value`` as one line of at most ``limit`` characters a person can trust to read as shown.

    Line breaks and tabs become spaces, control and invisible formatting characters go, a leading formula
    character gets a ``'``, and text too long ends with ``…``. No markup is escaped: that is each channel's
    job, for its own markup."""
    text = "".join(
        " " if char in "\r\n\t" or unicodedata.category(char) in ("Zl", "Zp") else char
        for char in str(value)
        if char in "\r\n\t" or unicodedata.category(char) not in _UNPRINTABLE
    )
    text = re.sub(r"\s+", " ", text).strip()
    if text.startswith(FORMULA_START):
        text = "'" + text
    if len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    return text


def links_for(notice: Notice, base_url: str) -> Links:
    """The pages a notice's message links to, under ``base_url`` (``Settings.external_url``).

    A request's notices lead to its page (``/requests/<id>``, ``#extend`` for the extend form) and to the
    approver's inbox; a review campaign's to the reviewer's page showing that campaign's items still to decide
    (``/reviews?campaign=<id>``)."""
    base = base_url.rstrip("/")
    if notice.kind in REVIEW_KINDS:
        reviews = f"{base}/reviews?{urlencode({'campaign': notice.subject})}"
        return Links(request=reviews, approvals=reviews, extend=reviews)
    if notice.kind is NoticeKind.TEST:  # no request behind it: back to the page it was sent from
        page = f"{base}/admin/notifications"
        return Links(request=page, approvals=page, extend=page)
    page = f"{base}/requests/{quote(notice.subject, safe='')}"
    return Links(request=page, approvals=f"{base}/approvals", extend=f"{page}#extend")


REVIEW_KINDS = (NoticeKind.REVIEW_ASSIGNED, NoticeKind.REVIEW_REMINDER)
"""A review campaign's notices: about a campaign (the subject), not a request; named by its description."""


def message_for(notice: Notice, links: Links) -> Message:
    """What ``notice`` says: its title, sentence, fields and main link."""
    role = plain(notice.role or notice.subject, 100)
    if notice.kind in REVIEW_KINDS:  # the campaign as people know it: its description, else its definition's name
        role = plain(notice.details.get("description") or notice.details.get("definition") or notice.subject, 100)
    title, action, url = _HEADLINES[notice.kind](role, links)
    text = plain(notice.text, TEXT_LIMIT) or plain(_FALLBACK_TEXT[notice.kind], TEXT_LIMIT)
    return Message(plain(title, TITLE_LIMIT), text, fields_for(notice), action, url)


def fields_for(notice: Notice) -> tuple[tuple[str, str], ...]:
    """The facts a reader checks before acting, in the order they check them; empty ones are left out."""
    details = notice.details
    if notice.kind in REVIEW_KINDS:
        return _review_fields(notice)
    asking = notice.kind in (NoticeKind.DECISION_NEEDED, NoticeKind.REMINDER, NoticeKind.ESCALATED)
    prefix = "extension_" if details.get("extension") else ""  # an extension's own length and reason
    found: list[tuple[str, Any]] = [
        ("Role", notice.role),
        ("Requester", notice.requester),
        # What an approver weighs before deciding: for how long, and why.
        ("For", details.get(f"{prefix}duration") if asking else ""),
        ("Why", details.get(f"{prefix}justification") if asking else ""),
        ("Request", notice.subject),
        ("By", notice.actor if notice.actor not in ("", "lapse", notice.requester) else ""),
        ("Decision", _decision(details)),
        ("Step", details.get("step")),
        ("State", details.get("state")),
        ("Ends", _when(details.get("expires_at"))),
        ("Comment", details.get("comment")),
        ("Reason", details.get("reason")),
    ]
    shown = [(label, plain(value)) for label, value in found if value not in (None, "")]
    return tuple((label, value) for label, value in shown if value)[:MAX_FIELDS]


def _review_fields(notice: Notice) -> tuple[tuple[str, str], ...]:
    """A campaign's facts: which one, how many items, by when, and why they came to this reader."""
    details = notice.details
    reports = details.get("reports") or {}
    found: list[tuple[str, Any]] = [
        ("Campaign", details.get("campaign") or notice.subject),
        ("Items", details.get("items")),
        ("Open", details.get("open")),
        ("Due", _when(details.get("deadline"))),
        ("Why", _REVIEW_REASONS.get(details.get("reason", ""), "")),
        ("By", notice.actor if notice.actor not in ("", "lapse") else ""),
        ("Role", details.get("role")),
        ("Holder", details.get("holder")),
        ("Their reports", ", ".join(f"{person} ({n} open)" for person, n in reports.items())),
        ("Comment", details.get("comment")),
    ]
    shown = [(label, plain(value)) for label, value in found if value not in (None, "")]
    return tuple((label, value) for label, value in shown if value)[:MAX_FIELDS]


_REVIEW_REASONS = {
    "escalated": "nobody decided them by the deadline: escalated to you",
    "reviewer_left": "their reviewer left the organisation",
    "reassigned": "handed over by their reviewer",
}


def _decision(details: dict[str, Any]) -> str:
    approved = details.get("approved")
    return "" if approved is None else ("approved" if approved else "denied")


def _when(value: Any) -> str:
    """A time as people read it in a message: to the minute, UTC said so (a reader's zone is not known)."""
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            return value.strftime("%Y-%m-%d %H:%M")
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


Headline = Callable[[str, Links], tuple[str, str, str]]
"""From the role and the links: the title, the main link's label and its URL."""


def _headline(title: str, action: str, link: str) -> Headline:
    def make(role: str, links: Links) -> tuple[str, str, str]:
        return title.format(role=role), action, str(getattr(links, link))

    return make


_HEADLINES: dict[NoticeKind, Headline] = {
    NoticeKind.DECISION_NEEDED: _headline("Decision needed: {role}", "Decide", "request"),
    NoticeKind.REMINDER: _headline("Reminder, still waiting for a decision: {role}", "Decide", "request"),
    NoticeKind.ESCALATED: _headline("Escalated to you, decision needed: {role}", "Decide", "request"),
    NoticeKind.DECIDED: _headline("Decided: {role}", "Open the request", "request"),
    NoticeKind.GRANTED: _headline("Granted: {role}", "Open the request", "request"),
    NoticeKind.EXPIRING_SOON: _headline("Ending soon: {role}", "Extend", "extend"),
    NoticeKind.ENDED: _headline("Ended: {role}", "Open the request", "request"),
    NoticeKind.TROUBLE: _headline("Needs an admin: {role}", "Open the request", "request"),
    NoticeKind.BREAK_GLASS: _headline("BREAK-GLASS access granted: {role}", "Review it", "request"),
    NoticeKind.BREAK_GLASS_REVIEW: _headline("Break-glass review: {role}", "Review it", "request"),
    NoticeKind.REVIEW_ASSIGNED: _headline("Access review, items to review: {role}", "Review your items", "request"),
    NoticeKind.REVIEW_REMINDER: _headline("Reminder, access review items open: {role}", "Review your items", "request"),
    NoticeKind.TEST: _headline("Test message from Lapse", "Open Lapse", "request"),
}
"""Per kind: the title (``{role}`` filled in: a review campaign's description), the main link's label and which
of the Links it is."""

_FALLBACK_TEXT: dict[NoticeKind, str] = {
    NoticeKind.DECISION_NEEDED: "A request waits for your decision.",
    NoticeKind.REMINDER: "A request still waits for your decision.",
    NoticeKind.ESCALATED: "Nobody decided this request in time: you may now decide it.",
    NoticeKind.DECIDED: "The request was decided.",
    NoticeKind.GRANTED: "Your access is granted.",
    NoticeKind.EXPIRING_SOON: "Your access ends soon: extend it if you still need it.",
    NoticeKind.ENDED: "The request has ended.",
    NoticeKind.TROUBLE: "Lapse could not finish this request's work: an admin should look at it.",
    NoticeKind.BREAK_GLASS: "Emergency access was granted without approval: review it.",
    NoticeKind.BREAK_GLASS_REVIEW: "An emergency grant waits for its review.",
    NoticeKind.REVIEW_ASSIGNED: "An access review has items for you to review.",
    NoticeKind.REVIEW_REMINDER: "An access review's deadline nears and you have items open.",
    NoticeKind.TEST: "A test message from Lapse: this channel works.",
}
"""What a message says when its notice carries no sentence of its own."""

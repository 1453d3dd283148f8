"""Delivering notifications: the outbox's dispatcher and one sender per channel.

The dispatcher (``dispatcher.py``) claims due rows of the outbox (``store.notifications``) and hands each to
its channel's :class:`Sender`; a sender says what it made of it (:class:`Sent`) or why not
(:class:`DeliveryError`). Senders know their channel's protocol and nothing of the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from access.notifications import Channel, Notice


@dataclass(frozen=True)
class Links:
    """Where a message sends people: pages of the web UI (``Settings.public_base``)."""

    request: str
    """The request's page: it decides, extends, and does any fresh sign-in a decision needs."""
    approvals: str
    """The approver's inbox."""
    extend: str
    """The request's page, at its extend form."""


@dataclass(frozen=True)
class Outgoing:
    """One outbox row to send."""

    id: int
    channel: Channel
    target: str
    """Which configured destination (a Slack channel, a Teams or webhook name); empty: the person."""
    recipient: str | None
    notice: Notice
    links: Links
    key: str
    """The idempotency key: sent as such where the channel takes one (webhooks' ``X-Lapse-Delivery``)."""
    previous: list[dict[str, Any]] = field(default_factory=list)
    """What this channel made of earlier notices about the same subject to the same recipient (Slack's
    ``channel``/``ts``, oldest first): a decision updates those messages so nobody acts on a stale one."""


@dataclass(frozen=True)
class Sent:
    ref: dict[str, Any] = field(default_factory=dict)
    """What to keep of the message (Slack: ``channel``, ``ts``)."""
    skipped: str | None = None
    """Nothing was sent and nothing will be, with why (Slack knows no such person)."""


class DeliveryError(Exception):
    """A send that failed: tried again later unless ``permanent``; ``retry_after`` (seconds) where the
    channel said when (HTTP 429)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Sender(Protocol):
    channel: Channel

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        """Whether sending a notice of ``kind`` (with its ``details``) reads :attr:`Outgoing.previous`: the
        dispatcher looks the earlier messages up only then."""
        ...

    async def send(self, outgoing: Outgoing) -> Sent: ...

    async def close(self) -> None: ...

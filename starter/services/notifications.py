"""Notifications as people and admins see them: the organisation's channels (admins), a person's own choice
of channels, and who was told what about a request (with what failed).

The API (``/api/notifications/settings``, ``/api/me/notifications``, ``/api/requests/{id}/notifications``) and the
web pages (the request page's list, the settings page's block) call these. Sending is the worker's
(``activities.notify.dispatcher``); queueing happens with each recorded event (``store.notifications``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from access.errors import Refusal, RefusalKind
from access.notifications import PERSONAL_CHANNELS, Channel, NoticeKind
from access.types import AuditEntry
from activities.notify.config import NotificationSettings
from activities.notify.settings import routes_of, stored_settings
from starter.services.authorization import require_admin
from starter.services.requests import get_request
from store import notifications as outbox
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import User


class NotificationSettingsOut(BaseModel):
    """The organisation's ``notifications`` section as stored (secrets are references: shown as they are)."""

    settings: NotificationSettings | None
    """None: not configured, nobody is told anything."""
    updated_by: str | None = None
    updated_at: datetime | None = None


class MyNotifications(BaseModel):
    """How a person is told: their choice among the personal channels the organisation configured."""

    channels: list[Channel] | None
    """What they chose (``[]``: nothing at all); null: the organisation's defaults."""
    effective: list[Channel]
    """The channels they are told by now."""
    available: list[Channel]
    """The personal channels configured (Slack direct messages, email)."""
    defaults: list[Channel]


class MyNotificationsIn(BaseModel):
    channels: list[Channel] | None
    """The personal channels to be told by (``[]``: none); null: the organisation's defaults."""


class NotificationOut(BaseModel):
    """One message about a request, on one channel: to whom, of what, and how it went."""

    id: int
    kind: NoticeKind
    action: str
    """The audit event it tells of (``step.opened``, ``grant.expiring_soon``…)."""
    channel: Channel
    target: str
    """The configured destination (a Slack channel, a Teams or webhook name); empty: the person's own."""
    recipient: str | None
    state: str
    """``pending`` (being sent, or waiting to be tried again), ``sent``, ``skipped`` or ``failed`` (given up)."""
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    next_try_at: datetime | None
    """When a pending one is tried again."""
    error: str | None
    """The last failure, or why it was skipped."""


# --- the organisation's channels (admins) ---------------------------------------------------


def get_settings(settings: Settings, actor: User) -> NotificationSettingsOut:
    require_admin(actor)
    with session_scope(settings.db_url, write=False) as session:
        row = outbox.section_row(session, outbox.NOTIFICATIONS)
        stored = stored_settings(session)
    if row is None:
        return NotificationSettingsOut(settings=None)
    return NotificationSettingsOut(settings=stored, updated_by=row.updated_by, updated_at=row.updated_at)


def put_settings(settings: Settings, actor: User, body: NotificationSettings | None) -> NotificationSettingsOut:
    """Replace the ``notifications`` section (None removes it: nobody is told anything), audited. Workers pick
    the change up within a second or so; it applies to messages sent from then on."""
    require_admin(actor)
    stored = body.model_dump(mode="json", exclude_defaults=True) if body is not None else None
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        before = outbox.section(session, outbox.NOTIFICATIONS)
        if outbox.save_section(session, outbox.NOTIFICATIONS, stored, actor.email, now=now):
            details: dict[str, Any] = {"before": before, "after": stored}  # references only, never a secret
            event = AuditEntry(
                actor=actor.email, action="notifications.updated", target="notifications", details=details
            )
            append_audit(session, [event])
    return get_settings(settings, actor)


# --- a person's channels ---------------------------------------------------------------------


def my_notifications(settings: Settings, user: User) -> MyNotifications:
    with session_scope(settings.db_url, write=False) as session:
        routes = routes_of(stored_settings(session))
        chosen = outbox.preference(session, user.email)
    available, defaults = list(routes.personal), list(routes.defaults)
    effective = [c for c in available if c in chosen] if chosen is not None else defaults
    return MyNotifications(channels=chosen, effective=effective, available=available, defaults=defaults)


def set_my_notifications(settings: Settings, user: User, body: MyNotificationsIn) -> MyNotifications:
    """Keep ``user``'s choice of channels; a channel that is not a person's, or not configured, is refused."""
    if body.channels is not None:
        with session_scope(settings.db_url, write=False) as session:
            available = routes_of(stored_settings(session)).personal
        for channel in body.channels:
            if channel not in PERSONAL_CHANNELS:
                raise Refusal(
                    RefusalKind.INVALID,
                    f"channels: {channel.value} reaches a channel or a system, not a person; choose among "
                    f"{', '.join(c.value for c in PERSONAL_CHANNELS)}",
                    field="channels",
                )
            if channel not in available:
                raise Refusal(
                    RefusalKind.INVALID,
                    f"channels: {channel.value} is not configured here"
                    + (f"; choose among {', '.join(c.value for c in available)}" if available else ""),
                    field="channels",
                )
    with session_scope(settings.db_url) as session:
        outbox.save_preference(session, user.email, body.channels, now=datetime.now(UTC))
    return my_notifications(settings, user)


# --- a request's notifications ---------------------------------------------------------------


def request_notifications(settings: Settings, user: User, request_id: str) -> list[NotificationOut]:
    """Who was told what about a request, oldest first, with what is pending and what failed; for those who
    may see the request."""
    get_request(settings, user, request_id)  # refused unless they may see the request
    return notifications_about(settings, request_id)


def notifications_about(settings: Settings, request_id: str) -> list[NotificationOut]:
    """``request_notifications`` for a caller already allowed to see the request (its page)."""
    with session_scope(settings.db_url, write=False) as session:
        rows = outbox.about(session, request_id)
    return [
        NotificationOut(
            id=row.id or 0,
            kind=NoticeKind(row.kind),
            action=str(row.notice.get("action", "")),
            channel=Channel(row.channel),
            target=row.target,
            recipient=row.recipient,
            state=row.state,
            attempts=row.attempts,
            created_at=row.created_at,
            sent_at=row.sent_at,
            next_try_at=row.due_at if row.state == outbox.PENDING else None,
            error=row.error,
        )
        for row in rows
    ]

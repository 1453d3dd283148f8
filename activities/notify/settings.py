"""The stored ``notifications:`` and ``on_call:`` sections, typed, and the routes the outbox queues by.

The organisation file (or ``PUT /api/notifications/settings``) stores each section whole, as JSON
(``store.notifications.section``); here they become their models (``activities.notify.config``). Recording a
request's step reads the routes once per step, so the parsed routes are kept per section version.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from pydantic import ValidationError
from sqlmodel import Session

from access.notifications import PERSONAL_CHANNELS, Channel
from activities.notify.config import NotificationSettings, OnCallSettings, Route
from store import notifications as outbox
from store.notifications import NO_ROUTES, Destination, Routes

log = logging.getLogger(__name__)


def stored_settings(session: Session) -> NotificationSettings | None:
    """The stored ``notifications`` section, or None: none given (or one this version cannot read, logged)."""
    body = outbox.section(session, outbox.NOTIFICATIONS)
    if body is None:
        return None
    try:
        return NotificationSettings.model_validate(body)
    except ValidationError as error:
        log.error("the stored notifications section is not valid, so nobody is notified: %s", error)
        return None


def stored_on_call(session: Session) -> OnCallSettings | None:
    """The stored ``on_call`` section, or None."""
    body = outbox.section(session, outbox.ON_CALL)
    if body is None:
        return None
    try:
        return OnCallSettings.model_validate(body)
    except ValidationError as error:
        log.error("the stored on_call section is not valid, so no on-call source is read: %s", error)
        return None


def routes_of(settings: NotificationSettings | None) -> Routes:
    """Where notices go under ``settings``: personal channels configured (Slack only with direct messages on),
    the defaults among them, and every shared destination with its filters."""
    if settings is None:
        return NO_ROUTES
    personal = [c for c in settings.personal_channels() if c is not Channel.SLACK or _slack_dms(settings)]
    personal = [c for c in PERSONAL_CHANNELS if c in personal]
    defaults = tuple(c for c in personal if c in settings.default_channels)
    broadcasts: list[Destination] = []
    if settings.slack is not None:
        broadcasts += [_destination(Channel.SLACK, route.channel, route) for route in settings.slack.channels]
    broadcasts += [_destination(Channel.TEAMS, webhook.name, webhook) for webhook in settings.teams]
    broadcasts += [_destination(Channel.WEBHOOK, target.name, target) for target in settings.webhooks]
    return Routes(personal=tuple(personal), defaults=defaults, broadcasts=tuple(broadcasts))


def _slack_dms(settings: NotificationSettings) -> bool:
    return settings.slack is not None and settings.slack.direct_messages


def _destination(channel: Channel, target: str, route: Route) -> Destination:
    return Destination(
        channel=channel,
        target=target,
        kinds=frozenset(route.kinds),
        workflows=frozenset(route.workflows),
        integrations=frozenset(route.integrations),
    )


class RoutesCache:
    """The routes of the stored section, parsed once per version of it: a primary-key read per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[int, datetime] | None = None
        self._routes = NO_ROUTES

    def routes(self, session: Session) -> Routes:
        updated_at = outbox.section_version(session, outbox.NOTIFICATIONS)
        if updated_at is None:
            return NO_ROUTES
        version = (id(session.get_bind()), updated_at)  # engines live as long as the process
        with self._lock:
            if version == self._version:
                return self._routes
        routes = routes_of(stored_settings(session))
        with self._lock:
            self._version, self._routes = version, routes
        return routes


stored_routes = RoutesCache().routes
"""The routes of the stored ``notifications`` section (cached per version of it)."""

"""Notifications: the organisation's channels (admins), your own channels, and who was told what of a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from activities.notify.config import NotificationSettings
from starter.api.deps import AdminUser, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import notifications
from starter.services.fields import Name
from starter.services.notifications import MyNotifications, MyNotificationsIn, NotificationOut, NotificationSettingsOut

router = APIRouter(tags=["notifications"], responses=responses(401, 413, 422))

RequestId = Annotated[Name, Path(description="The request's id.")]


@router.get("/api/notifications/settings")
def get_notification_settings(admin: AdminUser, settings: SettingsDep) -> NotificationSettingsOut:
    """The organisation's `notifications` section (admins): Slack, Teams, email, webhooks, default channels and
    the expiry warning's lead time. Secrets are references (`<field>_env`, `<field>_file`), shown as such."""
    return notifications.get_settings(settings, admin)


@router.put("/api/notifications/settings")
def put_notification_settings(
    body: NotificationSettings, admin: AdminUser, settings: SettingsDep
) -> NotificationSettingsOut:
    """Replace the `notifications` section (admins), as the organisation file's does; audited
    (`notifications.updated`). Workers send by it within seconds. Give secrets by reference only."""
    return notifications.put_settings(settings, admin, body)


@router.get("/api/me/notifications")
def get_my_notifications(user: CurrentUser, settings: SettingsDep) -> MyNotifications:
    """Which channels you are told by: your choice, or the organisation's defaults."""
    return notifications.my_notifications(settings, user)


@router.put("/api/me/notifications")
def put_my_notifications(body: MyNotificationsIn, user: CurrentUser, settings: SettingsDep) -> MyNotifications:
    """Choose the personal channels (`slack`, `email`) you are told by among those configured; `[]` for none,
    `null` for the organisation's defaults."""
    return notifications.set_my_notifications(settings, user, body)


@router.get("/api/requests/{request_id}/notifications", responses=responses(403, 404))
def request_notifications(request_id: RequestId, user: CurrentUser, settings: SettingsDep) -> list[NotificationOut]:
    """Who was told what about a request, on which channel, and how it went: sent, pending (with its next
    try), skipped or failed (given up after its retries, with why). For those who may see the request."""
    return notifications.request_notifications(settings, user, request_id)

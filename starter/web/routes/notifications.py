"""A person's notification channels, from the block on their settings page (``/tokens#notifications``): the
same service as ``PUT /api/me/notifications``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import RedirectResponse

from access.errors import Refusal, RefusalKind
from access.notifications import Channel
from starter.api.deps import SettingsDep
from starter.services.notifications import MyNotificationsIn, set_my_notifications
from starter.web.rendering import PageRoute, PageUser

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Mode = Annotated[Literal["defaults", "chosen"], Form()]
Channels = Annotated[list[str] | None, Form(max_length=2 * len(Channel))]


@router.post("/notifications")
def save_my_notifications(
    user: PageUser, settings: SettingsDep, mode: Mode, channels: Channels = None
) -> RedirectResponse:
    """The organisation's defaults, or exactly the channels ticked (none ticked: told by nothing)."""
    chosen: list[Channel] | None = None
    if mode == "chosen":
        try:
            chosen = [Channel(value) for value in channels or []]
        except ValueError:
            raise Refusal(RefusalKind.INVALID, "channels: choose among slack and email", field="channels") from None
    set_my_notifications(settings, user, MyNotificationsIn(channels=chosen))
    return RedirectResponse("/tokens?notifications=saved#notifications", status_code=303)

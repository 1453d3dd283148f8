"""Admin: notifications (``/admin/notifications``): each channel's set-up (secrets as references, and whether they
resolve here), the outbox's recent rows and counts, a test message to any channel or destination, and previews
of every kind of message on email, Slack and Teams.

Over ``starter.services.notification_admin``, which checks the caller is an admin itself. Settings are changed
by the organisation file or ``PUT /api/notifications/settings``: the page shows the section, it does not edit
it. A test message is queued in the outbox and sent by the workers' dispatcher; its row on the page refreshes
(htmx) until it is sent, skipped or failed.

The email preview is the message's real HTML body, which styles itself inline as email must (mail clients drop
style sheets). The pages' policy allows no inline style, and an ``<iframe srcdoc>`` inherits that policy, so
the body is served alone by ``/admin/notifications/preview/email`` under a policy of its own (``EMAIL_CSP``):
inline styles and nothing else (no script, no fetch, no form, no plugin), in a sandbox, framed only by Lapse's
own pages; the page frames it in an ``<iframe sandbox>``. The pages' own policy stays as strict as it is.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from access.errors import Refusal, RefusalKind
from access.notifications import Channel, NoticeKind
from starter.api.deps import SettingsDep
from starter.api.problems import STATUS
from starter.services import notification_admin
from starter.services.notification_previews import PREVIEW_CHANNELS, PreviewChannel
from starter.web.rendering import PageAdmin, PageRoute, render, unchanged, version

router = APIRouter(prefix="/admin/notifications", route_class=PageRoute, include_in_schema=False)

EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'; "
    "form-action 'none'; sandbox"
)
"""The email body's own policy: its inline styles, nothing else, framed by Lapse's pages only."""
TEST_POLL_SECONDS = 1
"""A test message's row asks again this often until it settles (the dispatcher sends within a second)."""

Kind = Annotated[NoticeKind, Query(description="Which kind of message.")]
PreviewOn = Annotated[PreviewChannel, Query(description="email, slack or teams.")]
Seen = Annotated[str | None, Query(max_length=64)]


@router.get("", response_class=HTMLResponse)
def notifications_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    test: Annotated[int | None, Query(ge=1, description="A test message just queued.")] = None,
) -> HTMLResponse:
    overview = notification_admin.overview(settings, admin)
    tested = notification_admin.outbox_row(settings, admin, test) if test is not None else None
    return render(
        request,
        "admin_notifications.html",
        overview=overview,
        tested=tested,
        tested_version=version(repr(tested)) if tested is not None else "",
        kinds=list(NoticeKind),
        channels=PREVIEW_CHANNELS,
        test_poll_seconds=TEST_POLL_SECONDS,
    )


@router.post("/test", response_model=None)
def send_test(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    channel: Annotated[Channel, Form()],
    target: Annotated[str, Form(max_length=80)] = "",
) -> Response:
    """Queue a test message to the admin (``target`` empty) or to a configured destination; htmx gets the row,
    which refreshes itself until it settles; a plain form, the page with it."""
    wants_fragment = request.headers.get("HX-Request") == "true"
    try:
        row = notification_admin.send_test(settings, admin, channel, target)
    except Refusal as refusal:
        if not wants_fragment or refusal.kind is RefusalKind.FORBIDDEN:
            raise  # the page says why, as a page
        said = render(
            request, "fragments/admin_notification_refused.html", refusal=refusal, status=STATUS[refusal.kind]
        )
        return said
    if not wants_fragment:
        return RedirectResponse(f"/admin/notifications?test={row.id}#tested", status_code=303)
    return _row_fragment(request, row)


@router.get("/outbox/{row_id}", response_model=None)
def outbox_row(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    row_id: Annotated[int, Path(ge=1)],
    v: Seen = None,
) -> Response:
    """One outbox row as it stands, or 204 while it is what the page shows (``v``)."""
    row = notification_admin.outbox_row(settings, admin, row_id)
    if (same := unchanged(v, version(repr(row)))) is not None:
        return same
    return _row_fragment(request, row)


def _row_fragment(request: Request, row: notification_admin.OutboxRow) -> HTMLResponse:
    return render(
        request,
        "fragments/admin_notification_test.html",
        row=row,
        row_version=version(repr(row)),
        test_poll_seconds=TEST_POLL_SECONDS,
    )


@router.get("/preview", response_class=HTMLResponse)
def preview_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    kind: Kind = NoticeKind.DECISION_NEEDED,
    channel: PreviewOn = "email",
) -> HTMLResponse:
    """A sample message of ``kind`` as ``channel`` shows it: the email's own HTML (framed), or a drawing of the
    Slack blocks or the Teams card; and the raw JSON the channel receives."""
    shown = notification_admin.preview_of(settings, admin, kind, channel)
    raw = json.dumps(shown.raw, indent=2, ensure_ascii=False) if shown.raw else ""
    return render(
        request,
        "admin_notification_preview.html",
        preview=shown,
        raw=raw,
        kinds=list(NoticeKind),
        channels=PREVIEW_CHANNELS,
    )


@router.get("/preview/email", response_class=HTMLResponse)
def email_body(
    request: Request, admin: PageAdmin, settings: SettingsDep, kind: Kind = NoticeKind.DECISION_NEEDED
) -> HTMLResponse:
    """The sample email's HTML body alone, exactly as sent, under ``EMAIL_CSP`` (framed by the preview page)."""
    shown = notification_admin.preview_of(settings, admin, kind, "email")
    assert shown.email is not None
    return HTMLResponse(
        shown.email.html,
        headers={
            "Content-Security-Policy": EMAIL_CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )

"""The admin's view of notifications: what each channel is set up with, whether its secrets resolve here, how
the outbox is doing, and a test message to any channel or destination.

Settings are changed by the organisation file or ``PUT /api/notifications/settings``
(``starter.services.notifications``); this only reads them. Secrets are shown as the references they are, and
checked without their value ever leaving this module: whether the variable is set, whether the file is there
and not empty. A test message is a real notice (``NoticeKind.TEST``) in the outbox, sent by the workers'
dispatcher like any other, so its outcome says whether the channel works from end to end.
"""

from __future__ import annotations

import os
import secrets as random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import case, func
from sqlmodel import Session, col, select

from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.notifications import Channel, NoticeKind
from access.types import AuditEntry
from activities.connectors.secrets import secret_policy
from activities.notify.config import NotificationSettings, Route
from activities.notify.settings import routes_of, stored_settings
from starter.services.authorization import require_admin
from starter.services.notification_previews import Preview, PreviewChannel, channel_test_notice, preview
from store import notifications as outbox
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import Notification, User

RECENT = 50
"""Outbox rows the page lists: failures first, then the newest."""
STATES = (outbox.PENDING, outbox.SENT, outbox.SKIPPED, outbox.FAILED)


@dataclass(frozen=True)
class SecretCheck:
    """A secret's reference and whether this process could read it; never its value."""

    field: str
    """The setting's name (``token``, ``signing_secret``, ``url``, ``password``, ``secret``)."""
    reference: str
    """``<field>_env: NAME`` or ``<field>_file: path``, as configured."""
    resolves: bool
    problem: str | None = None


@dataclass(frozen=True)
class Destination:
    """A shared destination (a Slack channel, a Teams webhook, a webhook) and what it is sent."""

    channel: Channel
    target: str
    kinds: tuple[NoticeKind, ...]
    workflows: tuple[str, ...]
    integrations: tuple[str, ...]
    url: str | None = None
    """A webhook's URL (not a secret; a Teams webhook's URL is, and is only referenced)."""
    secret: SecretCheck | None = None

    @property
    def every_kind(self) -> bool:
        """Whether it takes every kind of notice events make (an admin's test goes anywhere it is sent)."""
        return set(self.kinds) >= set(NoticeKind) - {NoticeKind.TEST}


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    action: str
    channel: str
    target: str
    recipient: str | None
    subject: str
    state: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    next_try_at: datetime | None
    error: str | None

    @property
    def settled(self) -> bool:
        """Sent, skipped or failed: it will not change any more."""
        return self.state != outbox.PENDING

    @property
    def about_request(self) -> bool:
        return self.kind not in (NoticeKind.TEST, NoticeKind.REVIEW_ASSIGNED, NoticeKind.REVIEW_REMINDER)


@dataclass(frozen=True)
class NotificationsOverview:
    settings: NotificationSettings | None
    invalid: str | None
    """Why the stored section cannot be read (then nobody is told anything)."""
    updated_by: str | None
    updated_at: datetime | None
    section_yaml: str
    """The stored section as the organisation file would hold it (references only)."""
    personal: tuple[Channel, ...]
    """The personal channels people are told by (Slack only with direct messages on)."""
    slack_secrets: tuple[SecretCheck, ...]
    email_password: SecretCheck | None
    destinations: tuple[Destination, ...]
    expiry_warning: str
    counts: dict[str, int]
    rows: tuple[OutboxRow, ...]


# --- reading --------------------------------------------------------------------------------------------------


def overview(settings: Settings, actor: User) -> NotificationsOverview:
    """Everything the admin page shows."""
    require_admin(actor)
    with session_scope(settings.db_url, write=False) as session:
        row = outbox.section_row(session, outbox.NOTIFICATIONS)
        counts = _counts(session)
        rows = tuple(_row(r) for r in _recent(session))
    body = dict(row.body) if row is not None else None
    configured: NotificationSettings | None = None
    invalid = None
    if body is not None:
        try:
            configured = NotificationSettings.model_validate(body)
        except ValidationError as error:
            invalid = str(error)
    section_yaml = yaml.safe_dump({outbox.NOTIFICATIONS: body}, sort_keys=False) if body is not None else ""
    slack_secrets: tuple[SecretCheck, ...] = ()
    email_password = None
    if configured is not None and configured.slack is not None:
        slack = configured.slack
        slack_secrets = (
            check_secret("token", slack.token_env, slack.token_file),
            check_secret("signing_secret", slack.signing_secret_env, slack.signing_secret_file),
        )
    if configured is not None and configured.email is not None and configured.email.username is not None:
        email_password = check_secret("password", configured.email.password_env, configured.email.password_file)
    return NotificationsOverview(
        settings=configured,
        invalid=invalid,
        updated_by=row.updated_by if row is not None else None,
        updated_at=row.updated_at if row is not None else None,
        section_yaml=section_yaml,
        personal=routes_of(configured).personal,
        slack_secrets=slack_secrets,
        email_password=email_password,
        destinations=destinations(configured) if configured is not None else (),
        expiry_warning=_expiry_warning(configured),
        counts={state: counts.get(state, 0) for state in STATES},
        rows=rows,
    )


def outbox_row(settings: Settings, actor: User, row_id: int) -> OutboxRow:
    """One outbox row as it stands now (a test message's outcome, refreshed by the page)."""
    require_admin(actor)
    with session_scope(settings.db_url, write=False) as session:
        found = session.get(Notification, row_id)
        if found is None:
            raise Refusal(RefusalKind.NOT_FOUND, f"there is no notification {row_id}")
        return _row(found)


def destinations(configured: NotificationSettings) -> tuple[Destination, ...]:
    """Every shared destination configured, in the order the section gives them."""
    found: list[Destination] = []
    if configured.slack is not None:
        found += [_destination(Channel.SLACK, route.channel, route) for route in configured.slack.channels]
    found += [
        _destination(Channel.TEAMS, hook.name, hook, secret=check_secret("url", hook.url_env, hook.url_file))
        for hook in configured.teams
    ]
    found += [
        _destination(
            Channel.WEBHOOK,
            hook.name,
            hook,
            url=str(hook.url),
            secret=check_secret("secret", hook.secret_env, hook.secret_file),
        )
        for hook in configured.webhooks
    ]
    return tuple(found)


def check_secret(field: str, env: str | None, file: Path | None) -> SecretCheck:
    """Whether the secret ``field`` references can be read by this process, as a sender would read it (the same
    policy), without reading it: a variable that is set, a file that is there and not empty."""
    policy = secret_policy()
    if env is not None:
        reference = f"{field}_env: {env}"
        problem = policy.env_problem(env)
        if problem is None and not os.environ.get(env):
            problem = f"{env} is not set on this API process"
    elif file is not None:
        reference = f"{field}_file: {file}"
        resolved, problem = policy.file_problem(file)
        if problem is None:
            try:
                if resolved.stat().st_size == 0:
                    problem = f"{file} is empty"
            except OSError as error:
                problem = f"cannot read {file}: {error.strerror}"
    else:
        return SecretCheck(field, "(none)", False, f"no {field}_env or {field}_file")
    return SecretCheck(field, reference, problem is None, problem)


def _destination(
    channel: Channel, target: str, route: Route, *, url: str | None = None, secret: SecretCheck | None = None
) -> Destination:
    return Destination(
        channel, target, tuple(route.kinds), tuple(route.workflows), tuple(route.integrations), url, secret
    )


def _expiry_warning(configured: NotificationSettings | None) -> str:
    if configured is None or configured.expiry_warning is None:
        return "the default: 15 minutes before a grant ends, or at 10% of it when that is shorter"
    return f"{format_duration(configured.expiry_warning)} before a grant ends (at most half of it)"


def _counts(session: Session) -> dict[str, int]:
    found = session.exec(select(Notification.state, func.count()).group_by(col(Notification.state)))
    return {state: int(count) for state, count in found}


def _recent(session: Session) -> list[Notification]:
    failed_first = case((col(Notification.state) == outbox.FAILED, 0), else_=1)
    return list(session.exec(select(Notification).order_by(failed_first, col(Notification.id).desc()).limit(RECENT)))


def _row(row: Notification) -> OutboxRow:
    return OutboxRow(
        id=row.id or 0,
        kind=row.kind,
        action=str(row.notice.get("action", "")),
        channel=row.channel,
        target=row.target,
        recipient=row.recipient,
        subject=row.subject,
        state=row.state,
        attempts=row.attempts,
        created_at=row.created_at,
        sent_at=row.sent_at,
        next_try_at=row.due_at if row.state == outbox.PENDING else None,
        error=row.error,
    )


# --- a test message -------------------------------------------------------------------------------------------


def send_test(settings: Settings, actor: User, channel: Channel, target: str = "") -> OutboxRow:
    """Queue a test notice to ``channel``: to the admin themselves (``target`` empty: their Slack direct message
    or their email), or to the configured destination ``target``. The workers' dispatcher sends it as any
    other; the row says how it went. Audited as ``notification.tested``."""
    require_admin(actor)
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        body = outbox.section(session, outbox.NOTIFICATIONS)
        try:
            configured = NotificationSettings.model_validate(body) if body is not None else None
        except ValidationError:
            configured = None
        _check_destination(configured, channel, target)
        subject = f"test-{now:%Y%m%dT%H%M%S}-{random.token_hex(3)}"
        notice = channel_test_notice(actor.email, channel, target, subject=subject, at=now)
        row = Notification(
            key=f"{notice.key}:{channel.value}:{target}",
            channel=channel.value,
            target=target,
            kind=notice.kind.value,
            recipient=notice.recipient,
            subject=subject,
            notice=notice.model_dump(mode="json"),
            state=outbox.PENDING,
            due_at=now,
            created_at=now,
        )
        session.add(row)
        details: dict[str, Any] = {"channel": channel.value, "to": target or actor.email, "subject": subject}
        append_audit(
            session,
            [AuditEntry(actor=actor.email, action="notification.tested", target="notifications", details=details)],
        )
        session.flush()
        return _row(row)


def _check_destination(configured: NotificationSettings | None, channel: Channel, target: str) -> None:
    """A refusal unless ``channel`` (and ``target``) is configured: a test goes where real notices can."""
    if configured is None:
        raise Refusal(
            RefusalKind.CONFLICT,
            "notifications are not configured (or their section cannot be read): nothing to test",
        )
    if not target:
        if channel is Channel.EMAIL and configured.email is None:
            raise Refusal(RefusalKind.INVALID, "channel: email is not configured", field="channel")
        if channel is Channel.SLACK and (configured.slack is None or not configured.slack.direct_messages):
            raise Refusal(
                RefusalKind.INVALID,
                "channel: Slack direct messages are not configured (notifications.slack.direct_messages)",
                field="channel",
            )
        if channel not in (Channel.EMAIL, Channel.SLACK):
            raise Refusal(
                RefusalKind.INVALID,
                f"target: {channel.value} reaches a configured destination, not a person: name it",
                field="target",
            )
        return
    if not any(d.channel is channel and d.target == target for d in destinations(configured)):
        raise Refusal(
            RefusalKind.INVALID,
            f"target: no {channel.value} destination named {target!r} is configured",
            field="target",
        )


# --- previews -------------------------------------------------------------------------------------------------


def preview_of(settings: Settings, actor: User, kind: NoticeKind, channel: PreviewChannel) -> Preview:
    """A sample notice of ``kind`` as ``channel`` shows it, with this Lapse's links and email sender."""
    require_admin(actor)
    with session_scope(settings.db_url, write=False) as session:
        configured = stored_settings(session)
    email = configured.email if configured is not None else None
    return preview(kind, channel, settings.external_url, email)

"""How Lapse reaches people: the ``notifications:`` and ``on_call:`` sections of the organisation file.

Secrets are references, as connectors' are (``<field>_env`` names a ``LAPSE_…`` variable, ``<field>_file`` a
file in the secrets directory), resolved when a message is sent, never stored. A section not given turns its
channel off; no section at all: Lapse tells no one anything, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, Field, model_validator

from access.durations import Duration
from access.notifications import Channel, NoticeKind
from access.types import Model
from activities.connectors.secrets import EnvName, SecretFile

MAX_ROUTES = 100


class SecretRef(Model):
    """Base of settings holding secrets by reference: ``<field>_env`` or ``<field>_file``, one of them."""

    @staticmethod
    def _one_of(env: str | None, file: Path | None, field: str) -> None:
        if (env is None) == (file is None):
            raise ValueError(f"give exactly one of {field}_env and {field}_file")


class Route(Model):
    """Which notices a shared destination (a Slack channel, a Teams webhook, a webhook) receives. Each filter
    given must match; none given: every notice of the kinds listed."""

    kinds: list[NoticeKind] = [
        NoticeKind.DECISION_NEEDED,
        NoticeKind.DECIDED,
        NoticeKind.BREAK_GLASS,
        NoticeKind.BREAK_GLASS_REVIEW,
        NoticeKind.TROUBLE,
    ]
    workflows: list[str] = Field(default=[], max_length=MAX_ROUTES)
    """Approval workflow names (a request's policy)."""
    integrations: list[str] = Field(default=[], max_length=MAX_ROUTES)
    """Integration names (the first part of a request's role path)."""


class SlackChannelRoute(Route):
    channel: str = Field(min_length=1, max_length=80)
    """A Slack channel id (``C0123…``) or name (``#access-requests``) the app is a member of."""


class SlackSettings(SecretRef):
    token_env: EnvName | None = None
    token_file: SecretFile | None = None
    """The bot token (``xoxb-…``)."""
    signing_secret_env: EnvName | None = None
    signing_secret_file: SecretFile | None = None
    """Verifies that interactions (button clicks) come from Slack."""
    base_url: AnyHttpUrl | None = None
    """Slack's Web API, ``https://slack.com/api/`` unless given (an Enterprise Grid proxy, or a test's)."""
    direct_messages: bool = True
    """Tell people in a DM, found by their email (``users.lookupByEmail``)."""
    channels: list[SlackChannelRoute] = Field(default=[], max_length=MAX_ROUTES)

    @model_validator(mode="after")
    def _secrets(self) -> SlackSettings:
        self._one_of(self.token_env, self.token_file, "token")
        self._one_of(self.signing_secret_env, self.signing_secret_file, "signing_secret")
        return self


class TeamsWebhook(Route, SecretRef):
    """A Teams Workflows webhook ("Post to a channel when a webhook request is received"); its URL carries its
    own signature, so it is a secret."""

    name: str = Field(min_length=1, max_length=80)
    url_env: EnvName | None = None
    url_file: SecretFile | None = None

    @model_validator(mode="after")
    def _secrets(self) -> TeamsWebhook:
        self._one_of(self.url_env, self.url_file, "url")
        return self


class EmailSettings(SecretRef):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(min_length=3, max_length=255)
    """The From address (``Lapse <lapse@example.com>``)."""
    security: str = Field(default="starttls", pattern="^(starttls|tls|none)$")
    """``starttls`` (port 587), ``tls`` (port 465) or ``none`` (a local relay or catcher only)."""
    username: str | None = Field(default=None, max_length=255)
    password_env: EnvName | None = None
    password_file: SecretFile | None = None

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if self.username is not None:
            self._one_of(self.password_env, self.password_file, "password")
        elif self.password_env or self.password_file:
            raise ValueError("a password needs a username")
        return self


class WebhookTarget(Route, SecretRef):
    """JSON POSTed to ``url``, signed with HMAC-SHA256 over ``<timestamp>.<body>`` with the secret."""

    name: str = Field(min_length=1, max_length=80)
    url: AnyHttpUrl
    secret_env: EnvName | None = None
    secret_file: SecretFile | None = None
    kinds: list[NoticeKind] = list(NoticeKind)

    @model_validator(mode="after")
    def _secrets(self) -> WebhookTarget:
        self._one_of(self.secret_env, self.secret_file, "secret")
        return self


class NotificationSettings(Model):
    """The organisation file's ``notifications:`` section."""

    slack: SlackSettings | None = None
    teams: list[TeamsWebhook] = Field(default=[], max_length=MAX_ROUTES)
    email: EmailSettings | None = None
    webhooks: list[WebhookTarget] = Field(default=[], max_length=MAX_ROUTES)
    default_channels: list[Channel] = [Channel.SLACK, Channel.EMAIL]
    """The personal channels a person is told by when they chose none (among those configured)."""
    expiry_warning: Duration | None = None
    """How long before a grant ends its holder is warned; default 15 minutes or 10% of the grant, whichever is
    shorter (``access.notifications.warning_lead``)."""

    def personal_channels(self) -> list[Channel]:
        """The personal channels configured here."""
        configured = {Channel.SLACK: self.slack is not None, Channel.EMAIL: self.email is not None}
        return [channel for channel, on in configured.items() if on]


class PagerDutySettings(SecretRef):
    token_env: EnvName | None = None
    token_file: SecretFile | None = None
    """A REST API key (read-only is enough)."""
    base_url: AnyHttpUrl | None = None
    """``https://api.pagerduty.com`` unless given (EU accounts, a test's server)."""

    @model_validator(mode="after")
    def _secrets(self) -> PagerDutySettings:
        self._one_of(self.token_env, self.token_file, "token")
        return self


class OpsgenieSettings(SecretRef):
    key_env: EnvName | None = None
    key_file: SecretFile | None = None
    """An API integration key (``GenieKey``)."""
    base_url: AnyHttpUrl | None = None
    """``https://api.opsgenie.com`` unless given (``api.eu.opsgenie.com``, a test's server)."""

    @model_validator(mode="after")
    def _secrets(self) -> OpsgenieSettings:
        self._one_of(self.key_env, self.key_file, "key")
        return self


class OnCallSettings(Model):
    """The organisation file's ``on_call:`` section: where "is the requester on call now" is read. A rule's
    ``when.on_call`` names ``pagerduty:<schedule id>`` or ``opsgenie:<schedule name>`` (else a group)."""

    pagerduty: PagerDutySettings | None = None
    opsgenie: OpsgenieSettings | None = None
    cache: Duration = timedelta(minutes=1)
    """How long an answer is reused: on-call changes by the hour, a request is made in seconds."""


def check_notifications(raw: Mapping[str, Any]) -> NotificationSettings:
    """Validate a ``notifications:`` section (raises pydantic's ValidationError, a ValueError)."""
    return NotificationSettings.model_validate(dict(raw))


def check_on_call(raw: Mapping[str, Any]) -> OnCallSettings:
    return OnCallSettings.model_validate(dict(raw))

"""Slack: notices as direct messages to people (found by email) and posts in configured channels.

A person is found with ``users.lookupByEmail`` once and kept in ``ChatIdentity`` (the method is rate limited, and
an interaction names the Slack user, not the email); someone Slack does not know is skipped, not retried. A
message that asks its reader to act (decide, extend) is remembered by its ``channel`` and ``ts`` in the outbox
row's ``ref``; when the request is decided or ends, those earlier messages are updated (``chat.update``) and lose
their buttons, so nobody acts on a stale one. Slack's answers become the dispatcher's terms: 429 is a retry after
its ``Retry-After``, a refusal that will not change by itself (a channel the app is not in, a message Slack will
not take) is permanent. The bot token is resolved when the first message is sent and never shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from access.connectors import ConnectorError, PermanentError
from access.notifications import Channel, NoticeKind
from activities.connectors.secrets import check_host, secret
from activities.notify import DeliveryError, Outgoing, Sent
from activities.notify.config import SlackSettings
from activities.notify.posting import MAX_RETRY_AFTER, retry_after
from activities.notify.slack_blocks import PROMPTS, notice_message
from store.db import session_scope
from store.tables import ChatIdentity

log = logging.getLogger(__name__)

SLACK_API = "https://slack.com/api/"
TIMEOUT = 10
"""Seconds: a Slack that takes longer is treated as down, and the send is tried again later."""
UNKNOWN_FOR = 600.0
"""Seconds an email Slack does not know is not looked up again (``users.lookupByEmail`` is Tier 3)."""
MAX_UNKNOWN = 10_000
KNOWN_FOR = 600.0
"""Seconds a Slack id read from the DB (or learnt) is reused without reading it again."""

PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "too_many_attachments",
        "cannot_dm_bot",
        "restricted_action",
        "ekm_access_denied",
        "invalid_arguments",
    }
)
"""Slack's refusals that sending the same message again will not change (an admin must change something)."""
GONE = frozenset({"user_not_found", "user_disabled", "channel_not_found"})
"""Answers to a direct message meaning the kept Slack user id is no longer good: look the person up again."""
UPDATE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found"})
"""An earlier message that can no longer be updated (deleted, too old): nothing to do about it."""

CLOSING = frozenset({NoticeKind.DECIDED, NoticeKind.ENDED})
"""Kinds that make a person's earlier prompts about the same request stale: those messages are updated."""


def bot_token(settings: SlackSettings) -> str:
    """The bot token, resolved from its reference (a ConnectorError if it cannot be)."""
    return secret(env=settings.token_env, file=settings.token_file, what="the Slack bot token", field="token")


def web_client(settings: SlackSettings, token: str, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """A Web API client at ``settings.base_url`` (Slack's own unless given)."""
    return AsyncWebClient(token=token, base_url=slack_base(settings), session=session, timeout=TIMEOUT)


def slack_base(settings: SlackSettings) -> str:
    """The Web API's base URL. One the integration host policy (``LAPSE_INTEGRATION_HOSTS``) refuses is a
    PermanentError: the bot token is sent nowhere else."""
    if settings.base_url is None:
        return SLACK_API
    check_host(settings.base_url.host or "", field="notifications.slack.base_url")
    base = str(settings.base_url)
    return base if base.endswith("/") else f"{base}/"


class SlackSender:
    """The Slack channel's :class:`~activities.notify.Sender`."""

    channel = Channel.SLACK

    def __init__(self, settings: SlackSettings, db_url: str) -> None:
        self.settings = settings
        self.db_url = db_url
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._unknown: dict[str, float] = {}
        """Emails Slack did not know, until when not to ask again."""
        self._ids: dict[str, tuple[str, float]] = {}
        """Slack ids read or learnt lately, by email, with when they go stale: no DB read per message."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._client = None

    def _web(self) -> AsyncWebClient:
        if self._client is None:
            try:
                token = bot_token(self.settings)
                slack_base(self.settings)
            except PermanentError as error:  # a base URL the host policy refuses: no retry changes that
                raise DeliveryError(f"Slack is not set up on this worker: {error}", permanent=True) from None
            except ConnectorError as error:  # a missing token: an admin may set it while the retries last
                raise DeliveryError(f"Slack is not set up on this worker: {error}") from None
            # One connection pool for every call: a new session per call would cost a TLS handshake each.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
            self._client = web_client(self.settings, token, self._session)
        return self._client

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        """Only a notice that closes earlier prompts (a decision, an end) or updates them reads them."""
        return kind in CLOSING or bool(details.get("update_only"))

    async def send(self, outgoing: Outgoing) -> Sent:
        web = self._web()
        if outgoing.target:  # a configured channel: its readers get links, never buttons that act
            return await self._post(web, outgoing, outgoing.target, direct=False)
        if outgoing.recipient is None:
            return Sent(skipped="a broadcast with no Slack channel to go to")
        if not self.settings.direct_messages:
            return Sent(skipped="Slack direct messages are turned off (notifications.slack.direct_messages)")
        user_id = await self._user_id(web, outgoing.recipient)
        if user_id is None:
            return Sent(skipped=f"Slack has no user with the email {outgoing.recipient}")
        notice = outgoing.notice
        updated = 0
        if notice.kind in CLOSING or notice.details.get("update_only"):
            updated = await self._close_prompts(web, outgoing)
            if notice.details.get("update_only"):
                if not updated:
                    return Sent(skipped="no earlier prompt of theirs to update")
                return Sent(ref={"updated": updated, "kind": notice.kind.value})
            if updated and notice.recipient != notice.requester:
                # An approver's own prompt now says what was decided: no second message about it.
                return Sent(ref={"updated": updated, "kind": notice.kind.value})
        sent = await self._post(web, outgoing, user_id, direct=True)
        return Sent(ref={**sent.ref, "updated": updated}) if updated else sent

    async def _post(self, web: AsyncWebClient, outgoing: Outgoing, channel: str, *, direct: bool) -> Sent:
        text, blocks = notice_message(outgoing.notice, outgoing.links, direct=direct)
        try:
            answer = await web.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
        except SlackApiError as error:
            code = _code(error)
            if direct and code in GONE and outgoing.recipient is not None:
                self._ids.pop(outgoing.recipient, None)
                await asyncio.to_thread(_forget, self.db_url, outgoing.recipient)
                raise DeliveryError(f"Slack no longer knows the user kept for {outgoing.recipient} ({code})") from None
            raise _failure(error, "chat.postMessage") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeliveryError(f"Slack could not be reached: {type(error).__name__}") from None
        return Sent(
            ref={
                "channel": answer.get("channel", channel),
                "ts": answer.get("ts"),
                "prompt": direct and outgoing.notice.kind in PROMPTS,
            }
        )

    async def _close_prompts(self, web: AsyncWebClient, outgoing: Outgoing) -> int:
        """Update the person's earlier prompts about this request to say what ``outgoing`` says, without buttons."""
        text, blocks = notice_message(outgoing.notice, outgoing.links, direct=True, closed=True)
        updated = 0
        for ref in outgoing.previous:
            if not ref.get("prompt") or not ref.get("channel") or not ref.get("ts"):
                continue
            try:
                await web.chat_update(channel=ref["channel"], ts=ref["ts"], text=text, blocks=blocks)
            except SlackApiError as error:
                if _code(error) in UPDATE_GONE:
                    continue
                raise _failure(error, "chat.update") from None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise DeliveryError(f"Slack could not be reached: {type(error).__name__}") from None
            updated += 1
        return updated

    async def _user_id(self, web: AsyncWebClient, email: str) -> str | None:
        """The person's Slack user id: kept from before, else looked up by email (and kept); None if Slack
        does not know them."""
        now = time.monotonic()
        cached = self._ids.get(email)
        if cached is not None and cached[1] > now:
            return cached[0]
        known = await asyncio.to_thread(_known, self.db_url, email)
        if known is not None:
            self._keep(email, known, now)
            return known
        if self._unknown.get(email, 0.0) > now:
            return None
        try:
            answer = await web.users_lookupByEmail(email=email)
        except SlackApiError as error:
            if _code(error) == "users_not_found":
                if len(self._unknown) >= MAX_UNKNOWN:
                    self._unknown.clear()
                self._unknown[email] = now + UNKNOWN_FOR
                return None
            raise _failure(error, "users.lookupByEmail") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeliveryError(f"Slack could not be reached: {type(error).__name__}") from None
        user = answer.get("user") or {}
        user_id = user.get("id")
        if not isinstance(user_id, str) or not user_id or user.get("deleted") or user.get("is_bot"):
            return None
        await asyncio.to_thread(remember, self.db_url, email, user_id)
        self._keep(email, user_id, now)
        return user_id

    def _keep(self, email: str, user_id: str, now: float) -> None:
        if len(self._ids) >= MAX_UNKNOWN:
            self._ids.clear()
        self._ids[email] = (user_id, now + KNOWN_FOR)


# --- Slack's answers ----------------------------------------------------------------------------------------


def _code(error: SlackApiError) -> str:
    data = getattr(error.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _failure(error: SlackApiError, method: str) -> DeliveryError:
    """What Slack's refusal means for the dispatcher: 429 and 5xx are tried again (after ``Retry-After`` where
    given), a refusal in ``PERMANENT`` is not, anything else (a token being rotated) is until the retries end."""
    status = getattr(error.response, "status_code", 0)
    code = _code(error) or f"HTTP {status}"
    message = f"Slack refused {method}: {code}"
    if status == 429:
        headers = getattr(error.response, "headers", {}) or {}
        after = retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        return DeliveryError(f"{message} (rate limited)", retry_after=min(after or 1.0, MAX_RETRY_AFTER))
    if status >= 500:
        return DeliveryError(message)
    return DeliveryError(message, permanent=code in PERMANENT)


# --- who is who in Slack, kept in the app DB -----------------------------------------------------------------


def _known(db_url: str, email: str) -> str | None:
    with session_scope(db_url, write=False) as session:
        row = session.get(ChatIdentity, (email.strip().lower(), Channel.SLACK.value))
        return row.external_id if row is not None else None


def remember(db_url: str, email: str, user_id: str) -> None:
    """Keep ``email``'s Slack user id (an id once another email's, that person changed address: theirs goes)."""
    email = email.strip().lower()
    try:
        with session_scope(db_url) as session:
            session.execute(
                delete(ChatIdentity).where(
                    col(ChatIdentity.channel) == Channel.SLACK.value,
                    col(ChatIdentity.external_id) == user_id,
                    col(ChatIdentity.user_email) != email,
                )
            )
            row = session.get(ChatIdentity, (email, Channel.SLACK.value))
            row = row or ChatIdentity(
                user_email=email, channel=Channel.SLACK.value, external_id=user_id, looked_up_at=datetime.now(UTC)
            )
            row.external_id, row.looked_up_at = user_id, datetime.now(UTC)
            session.add(row)
    except IntegrityError:  # another sender kept it at the same moment: theirs is as good
        log.debug("the Slack id of %s was kept by another sender meanwhile", email)


def _forget(db_url: str, email: str) -> None:
    with session_scope(db_url) as session:
        row = session.get(ChatIdentity, (email.strip().lower(), Channel.SLACK.value))
        if row is not None:
            session.delete(row)


def email_of(db_url: str, user_id: str) -> str | None:
    """Whose Slack user id this is, as kept (an interaction names the Slack user)."""
    with session_scope(db_url, write=False) as session:
        return session.exec(
            select(ChatIdentity.user_email).where(
                ChatIdentity.channel == Channel.SLACK.value, ChatIdentity.external_id == user_id
            )
        ).first()

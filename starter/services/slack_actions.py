"""Buttons clicked in Slack: Approve, Deny and Extend on Lapse's messages, decided as the person who clicked.

Slack POSTs each click to ``/api/slack/interactions``, signed with the app's signing secret. :func:`accept` checks
the signature (an HMAC-SHA256 of ``v0:<timestamp>:<body>``, compared in constant time) and that it was made in the
last five minutes, so a click cannot be forged or replayed; anything else is refused (401) and audited. Slack wants
its answer within three seconds, and a decision waits on the request's workflow, so the route answers at once and
:func:`start` carries the click out in the background: the Slack user becomes the Lapse user with their email (kept
in ``ChatIdentity`` when Lapse first messaged them, else asked of Slack with ``users.info``, taken only when Slack
has confirmed it and the user belongs to the click's workspace), the same services as the API decide for them, and
what came of it replaces the message through the click's ``response_url``, which must be Slack's (a refusal is a
reply only the clicker sees). A button vouches for who clicked, never for a recent sign-in, so a workflow with
``reauthenticate_within`` refuses it; its messages carry links instead of such buttons anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio.client import Client

from access import names
from access.connectors import ConnectorError
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.requests import ExtensionState, RequestStatus
from access.types import AuditEntry
from activities.connectors.secrets import secret
from activities.notify.config import SlackSettings
from activities.notify.settings import stored_settings
from activities.notify.slack import bot_token, email_of, remember, web_client
from activities.notify.slack_blocks import APPROVE, DENY, EXTEND, OPEN, ephemeral, outcome
from starter.services import requests
from starter.services.audit import refused
from starter.services.recent_sign_in import SignIn
from store import catalog
from store.audit_log import audit_refusal
from store.db import session_scope
from store.settings import Settings
from store.tables import User

log = logging.getLogger(__name__)

PATH = "/api/slack/interactions"
MAX_AGE = 300
"""Seconds: a signed request older (or newer) than this is refused, as Slack advises, so it cannot be replayed."""
CHAT = SignIn(via="chat")
"""How a click signed in: as the person Slack says clicked, never recently enough for ``reauthenticate_within``."""
COMMENTS = {APPROVE: "approved from Slack", DENY: "denied from Slack"}

_running: set[asyncio.Task[None]] = set()


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64)
    team_id: str = Field(default="", max_length=64)


class _Team(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(default="", max_length=64)


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str = Field(max_length=255)
    value: str = Field(default="", max_length=2000)


class _Payload(BaseModel):
    """The part of Slack's ``block_actions`` payload Lapse reads; Slack sends much more, ignored."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=64)
    user: _User
    team: _Team | None = None
    actions: list[_Action] = Field(default=[], max_length=25)
    response_url: str = Field(default="", max_length=3000)


@dataclass(frozen=True)
class Click:
    """A verified click on a button that acts."""

    slack_user: str
    action: str
    """``lapse.approve``, ``lapse.deny`` or ``lapse.extend``."""
    request_id: str
    response_url: str
    team: str = ""
    """The workspace the click came from (the payload's ``team``): a person Slack names must belong to it."""


# --- checking what Slack sent ---------------------------------------------------------------------------------


def accept(settings: Settings, body: bytes, timestamp: str | None, signature: str | None) -> Click | None:
    """The click Slack signed in ``body``, or None for one with nothing to do (a link button: its browser opens
    the page). A request Slack did not sign, or signed more than five minutes ago, is refused (401) and audited;
    a signed one Lapse does not handle is invalid (422)."""
    slack = _slack_settings(settings)
    _verify(settings, slack, body, timestamp, signature)
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
        [raw] = form["payload"]
        payload = _Payload.model_validate(json.loads(raw))
    except (UnicodeDecodeError, ValueError, KeyError, ValidationError):
        raise Refusal(
            RefusalKind.INVALID,
            "an interaction is a form with one field, payload, holding Slack's JSON",
            field="payload",
        ) from None
    if payload.type != "block_actions" or not payload.actions:
        raise Refusal(RefusalKind.INVALID, f"Lapse takes button clicks only, not {payload.type!r}", field="payload")
    action = payload.actions[0]
    if action.action_id == OPEN:
        return None
    if action.action_id not in (APPROVE, DENY, EXTEND):
        raise Refusal(RefusalKind.INVALID, f"Lapse has no button {action.action_id!r}", field="payload")
    if not action.value or not action.value.isalnum() or len(action.value) > 64 or not payload.response_url:
        raise Refusal(RefusalKind.INVALID, "the button names no request, or the click no response_url", field="payload")
    _check_response_url(slack, payload.response_url)
    team = payload.team.id if payload.team is not None and payload.team.id else payload.user.team_id
    return Click(payload.user.id, action.action_id, action.value, payload.response_url, team=team)


SLACK_RESPONSES = "https://hooks.slack.com/"
"""Where Slack's ``response_url``s are: the answer to a click goes there, and nowhere else."""


def _check_response_url(slack: SlackSettings | None, url: str) -> None:
    """Refuse a ``response_url`` that is not Slack's (or, with ``base_url`` set, a Slack stand-in's origin: its
    scheme, host and port): the reply carries what came of the click, for the clicker's eyes."""
    allowed = [SLACK_RESPONSES]
    if slack is not None and slack.base_url:
        parts = urlsplit(str(slack.base_url))
        allowed.append(f"{parts.scheme}://{parts.netloc}/")
    if not any(url.startswith(prefix) for prefix in allowed):
        raise Refusal(
            RefusalKind.INVALID,
            f"the click's response_url is not Slack's (it must start {SLACK_RESPONSES})",
            field="payload",
        )


def _slack_settings(settings: Settings) -> SlackSettings | None:
    with session_scope(settings.db_url, write=False) as session:
        stored = stored_settings(session)
    return stored.slack if stored is not None else None


def _verify(
    settings: Settings, slack: SlackSettings | None, body: bytes, timestamp: str | None, signature: str | None
) -> None:
    """Refuse (401, audited) unless Slack signed ``body`` with the signing secret at ``timestamp``, within
    ``MAX_AGE`` of now."""
    why: str | None = None
    if slack is None:
        why = "Slack is not set up in this Lapse (notifications.slack): its requests cannot be verified"
    elif not timestamp or not signature:
        why = "the request carries no X-Slack-Request-Timestamp and X-Slack-Signature: Slack did not sign it"
    elif not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE:
        why = "the request was signed more than 5 minutes from now: a replay, or a clock far off, is refused"
    else:
        try:
            key = secret(
                env=slack.signing_secret_env,
                file=slack.signing_secret_file,
                what="the Slack signing secret",
                field="signing_secret",
            )
        except ConnectorError as error:
            why = f"the request cannot be verified: {error}"
        else:
            expected = "v0=" + hmac.new(key.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), signature.encode()):
                why = "the request's X-Slack-Signature is not the signing secret's: Slack did not sign it"
    if why is not None:
        refusal = Refusal(RefusalKind.UNAUTHENTICATED, why, field="X-Slack-Signature")
        audit_refusal(settings, AuditEntry(actor="slack", action="slack.interaction.refused", target=PATH, reason=why))
        raise refusal


# --- carrying the click out -------------------------------------------------------------------------------------


def start(client: Client, settings: Settings, click: Click) -> None:
    """Carry ``click`` out in the background (the route has answered Slack by then)."""
    task = asyncio.get_running_loop().create_task(_act(client, settings, click), name=f"slack {click.action}")
    _running.add(task)
    task.add_done_callback(_running.discard)


async def settled() -> None:
    """Wait for the clicks being carried out (tests; a shutdown)."""
    while _running:
        await asyncio.gather(*list(_running), return_exceptions=True)


async def _act(client: Client, settings: Settings, click: Click) -> None:
    page = f"{settings.external_url.rstrip('/')}/requests/{click.request_id}"
    try:
        reply = await _decide(client, settings, click, page)
    except Refusal as refusal:
        reply = ephemeral(refusal.message, page)
    except Exception:
        log.exception("a Slack click (%s on request %s) could not be carried out", click.action, click.request_id)
        reply = ephemeral("Lapse could not do that just now: try again, or open the request.", page)
    try:
        answer = await AsyncWebhookClient(click.response_url, timeout=10).send_dict(reply)
        if answer.status_code >= 300:
            log.warning("Slack's response_url answered %s: %s", answer.status_code, answer.body[:200])
    except Exception as error:  # the decision stands; only the message was not replaced
        log.warning("could not reply to a Slack click through its response_url: %r", error)


async def _decide(client: Client, settings: Settings, click: Click, page: str) -> dict[str, Any]:
    actor = await _clicker(settings, click)
    if click.action == EXTEND:
        known = await asyncio.to_thread(requests.stored_status, settings, click.request_id)
        if known is None:
            raise Refusal(RefusalKind.NOT_FOUND, f"there is no request {click.request_id!r}")
        # The grant's own length again, judged by its policy as any extension is.
        status = await requests.extend(
            client,
            settings,
            actor,
            click.request_id,
            duration=known.duration,
            justification="extended from Slack",
            sign_in=CHAT,
        )
        return _extended(status, known, page)
    approved = click.action == APPROVE
    status = await requests.decide(
        client, settings, actor, click.request_id, approved=approved, comment=COMMENTS[click.action], sign_in=CHAT
    )
    verb = "approved" if approved else "denied"
    return outcome(
        f"You {verb}: {status.role}",
        f"You {verb} {status.requester}'s request for {status.role}. It is now {status.state.value}.",
        _fields(status),
        page,
    )


def _extended(status: RequestStatus, before: RequestStatus, page: str) -> dict[str, Any]:
    more = format_duration(before.duration)
    pending = status.extensions[-1] if status.extensions else None
    if pending is not None and pending.state is ExtensionState.PENDING:
        text = f"You asked for {more} more on {status.role}; it waits for approval."
    else:
        ends = status.expires_at.strftime("%Y-%m-%d %H:%M UTC") if status.expires_at else "later"
        text = f"Extended by {more}: your access to {status.role} now ends {ends}."
    return outcome(f"Extension: {status.role}", text, _fields(status), page)


def _fields(status: RequestStatus) -> list[tuple[str, str]]:
    return [("Role", status.role), ("Requester", status.requester), ("State", status.state.value)]


async def _clicker(settings: Settings, click: Click) -> User:
    """The active Lapse user whose email Slack has for the user who clicked; refused (audited) otherwise."""
    target = names.request_workflow_id(click.request_id)
    email = await asyncio.to_thread(email_of, settings.db_url, click.slack_user)
    if email is None:
        try:
            email = await _ask_slack(settings, click.slack_user, click.team)
        except Refusal as not_vouched:
            raise await asyncio.to_thread(
                refused, settings, f"slack:{click.slack_user}", _action(click), target, not_vouched
            ) from None
    user = await asyncio.to_thread(_person, settings, email) if email else None
    if user is None or not user.active:
        who = email or f"Slack user {click.slack_user}"
        refusal = Refusal(RefusalKind.FORBIDDEN, f"{who} is not an active person in Lapse: nothing was decided")
        raise await asyncio.to_thread(refused, settings, f"slack:{click.slack_user}", _action(click), target, refusal)
    return user


def _person(settings: Settings, email: str) -> User | None:
    with session_scope(settings.db_url, write=False) as session:
        return catalog.find_user(session, email)


async def _ask_slack(settings: Settings, slack_user: str, team: str) -> str | None:
    """The email of a Slack user Lapse never messaged (``users.info``), kept for next time; None if Slack does not
    say. Refused (nothing decided) unless Slack vouches for the email (``is_email_confirmed``) of a person of the
    workspace the click came from (not deleted, no bot, no stranger from a shared channel): anyone else could
    set their profile's email to an approver's."""
    slack = _slack_settings(settings)
    if slack is None:
        return None
    try:
        answer = await web_client(slack, bot_token(slack)).users_info(user=slack_user)
    except (SlackApiError, ConnectorError) as error:
        log.warning("Slack did not say who user %s is: %s", slack_user, type(error).__name__)
        return None
    user = answer.get("user") or {}
    email = (user.get("profile") or {}).get("email")
    if not isinstance(email, str) or not email:
        return None
    why = _not_vouched_for(user, team)
    if why is not None:
        raise Refusal(RefusalKind.FORBIDDEN, f"Slack user {slack_user} {why}: nothing was decided")
    await asyncio.to_thread(remember, settings.db_url, email, slack_user)
    return email.strip().lower()


def _not_vouched_for(user: dict[str, Any], team: str) -> str | None:
    """Why Slack's ``users.info`` answer does not tie its user to its profile's email, or None."""
    if user.get("deleted"):
        return "is deactivated"
    if user.get("is_bot"):
        return "is a bot"
    if user.get("is_stranger"):
        return "is not a member of this workspace"
    if user.get("is_email_confirmed") is not True:
        return "has an email Slack has not confirmed"
    if not team or user.get("team_id") != team:
        return "is not a member of the workspace the click came from"
    return None


def _action(click: Click) -> str:
    return {APPROVE: "request.approve", DENY: "request.deny", EXTEND: "grant.extend"}[click.action]

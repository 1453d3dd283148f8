"""A fake Slack Web API: a real local HTTP server that speaks the few methods Lapse calls, as Slack documents them.

No real Slack can be reached from tests, so this one stands in, reached through ``AsyncWebClient(base_url=…)``. It
records every call; checks the bot token as Slack does (``not_authed``, ``invalid_auth``: HTTP 200 with
``ok: false``); refuses what Slack refuses in a message (``msg_too_long``, ``invalid_blocks`` with Block Kit's
documented limits, ``no_text``, ``channel_not_found``, ``not_in_channel``); and answers rate limits with HTTP 429
and ``Retry-After`` (``chat.postMessage`` about one message a second per channel with short bursts, the others
by their tier). It also serves interactions' ``response_url`` (at most 5 uses, as Slack allows), and makes the
signed payloads Slack POSTs when someone clicks a button (``FakeSlack.click``, ``sign``).

It runs in a thread with its own event loop, so sync tests, async tests and the benchmark can all use it::

    with FakeSlack() as slack:
        ada = slack.add_user("ada@example.com")
        ... AsyncWebClient(token=slack.token, base_url=slack.base_url) ...
        assert slack.dms_to("ada@example.com")
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

TEAM = "T00000001"
"""The fake workspace's id: the ``team`` of every click, and of every user unless ``add_user`` says another."""
MAX_TEXT = 40_000
"""``chat.postMessage``'s ``text``: Slack truncates past this and calls it ``msg_too_long``."""
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_ACTIONS = 25
MAX_BUTTON_TEXT = 75
MAX_ACTION_ID = 255
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_BLOCK_ID = 255
MAX_CONTEXT_ELEMENTS = 10
RESPONSE_URL_USES = 5
"""Slack lets an app use an interaction's ``response_url`` up to five times (within 30 minutes)."""


@dataclass(frozen=True)
class Limits:
    """Rate limits, as token buckets: ``per_second`` refill, ``burst`` capacity. Slack's documented ones by
    default; a test or the benchmark may loosen or tighten them."""

    post_per_channel: float = 1.0
    """``chat.postMessage``: about one message a second per channel..."""
    post_burst: int = 5
    """...with short bursts over it allowed."""
    tier3_per_minute: int = 50
    """``users.lookupByEmail`` and ``chat.update`` (Tier 3: 50+ a minute)."""
    tier4_per_minute: int = 100
    """``users.info`` (Tier 4: 100+ a minute)."""
    tier_burst: int = 20


TIERS = {"users.lookupByEmail": 3, "chat.update": 3, "users.info": 4}


class _Bucket:
    def __init__(self, per_second: float, capacity: float) -> None:
        self.per_second = per_second
        self.capacity = capacity
        self.tokens = capacity
        self.at = time.monotonic()

    def take(self) -> float | None:
        """None if a call may go now (and take its token), else how many seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.per_second


@dataclass(frozen=True)
class Call:
    method: str
    """``chat.postMessage``, ``users.lookupByEmail``… or ``response_url``."""
    args: dict[str, Any]
    ok: bool
    error: str | None
    status: int
    at: float
    """``time.monotonic()`` when it arrived (the benchmark measures delays with it)."""


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str | None
    """The Slack user id a direct message went to."""
    posted_at: float
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Each ``chat.update`` or ``response_url`` replacement, oldest first (the message shows the last)."""

    def buttons(self) -> list[dict[str, Any]]:
        return [e for b in self.blocks if b.get("type") == "actions" for e in b.get("elements", [])]

    def button(self, action_id: str) -> dict[str, Any] | None:
        return next((b for b in self.buttons() if b.get("action_id") == action_id), None)

    def words(self) -> str:
        """Every text in the message, for asserting what it says."""
        return " ".join([self.text, *_texts(self.blocks)])


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield value["text"]
        for item in value.values():
            if isinstance(item, dict | list):
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


class SlackError(Exception):
    def __init__(self, error: str, status: int = 200, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after


class FakeSlack:
    """See the module's docstring."""

    def __init__(self, *, token: str = "xoxb-fake-slack-token", limits: Limits | None = None) -> None:
        self.token = token
        self.limits = limits or Limits()
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.responses: list[dict[str, Any]] = []
        """What was POSTed to response URLs, with ``_url`` added."""
        self.users: dict[str, dict[str, Any]] = {}
        """Slack user id -> ``users.info``'s user."""
        self.channels: dict[str, str] = {}
        """Channel id -> name; the bot is a member of these."""
        self.outside: set[str] = set()
        """Channel ids the bot is not a member of."""
        self.failing = 0
        """Answer the next this many API calls with HTTP 503: Slack having an outage."""
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self._response_urls: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- the server's life --------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        started = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            app = web.Application(client_max_size=4 * 1024 * 1024)
            app.router.add_route("*", "/api/{method}", self._api)
            app.router.add_post("/response/{key}", self._response)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-slack", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake Slack did not start")
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or self._thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``AsyncWebClient(base_url=…)`` and ``SlackSettings.base_url``."""
        return f"{self.url}/api/"

    # --- the workspace ------------------------------------------------------------------------------------

    def add_user(
        self,
        email: str,
        name: str | None = None,
        *,
        confirmed: bool = True,
        team: str = TEAM,
        stranger: bool = False,
        deleted: bool = False,
        bot: bool = False,
    ) -> str:
        """A person in the workspace (or, with ``team``, another one's; ``stranger``: from a shared channel's other
        workspace); ``confirmed`` is False for an email Slack has not confirmed. Returns their user id (``U…``)."""
        with self._lock:
            user_id = f"U{next(self._ids):08d}"
            self.users[user_id] = {
                "id": user_id,
                "team_id": team,
                "name": name or email.split("@")[0],
                "deleted": deleted,
                "is_bot": bot,
                "is_email_confirmed": confirmed,
                "profile": {"email": email, "real_name": name or email},
            }
            if stranger:
                self.users[user_id]["is_stranger"] = True
            return user_id

    def user_id(self, email: str) -> str | None:
        with self._lock:
            return next((u for u, user in self.users.items() if user["profile"]["email"] == email), None)

    def add_channel(self, name: str, *, member: bool = True) -> str:
        """A channel (``#name``); the bot is in it unless ``member`` is False. Returns its id (``C…``)."""
        with self._lock:
            channel_id = f"C{next(self._ids):08d}"
            self.channels[channel_id] = name.lstrip("#")
            if not member:
                self.outside.add(channel_id)
            return channel_id

    # --- reading what happened ----------------------------------------------------------------------------

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (ok is None or c.ok is ok)]

    def dms_to(self, email: str) -> list[Message]:
        """The direct messages the app sent ``email``, oldest first."""
        user = self.user_id(email)
        with self._lock:
            return [m for m in self.messages.values() if user is not None and m.user == user]

    def in_channel(self, name_or_id: str) -> list[Message]:
        channel = self._channel_id(name_or_id) or name_or_id
        with self._lock:
            return [m for m in self.messages.values() if m.channel == channel]

    def message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            return self.messages.get((channel, ts))

    # --- interactions -------------------------------------------------------------------------------------

    def response_url(self, channel: str, ts: str) -> str:
        """A ``response_url`` for an interaction with the message ``channel``/``ts``."""
        key = hashlib.sha256(f"{channel}/{ts}/{time.monotonic_ns()}".encode()).hexdigest()[:24]
        with self._lock:
            self._response_urls[key] = {"channel": channel, "ts": ts, "uses": 0}
        return f"{self.url}/response/{key}"

    def click(self, message: Message, action_id: str, *, by: str) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``by`` (an email) clicks ``action_id`` on ``message``:
        the button must be there (a link button sends one too, and then opens its URL)."""
        button = message.button(action_id)
        if button is None:
            raise AssertionError(f"message {message.ts} has no {action_id!r} button: {message.buttons()}")
        user = self.user_id(by)
        if user is None:
            raise AssertionError(f"{by} is not in the fake Slack workspace")
        action: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "block_id": "actions",
            "text": button["text"],
            "action_ts": f"{time.time():.6f}",
        }
        if "value" in button:
            action["value"] = button["value"]
        return {
            "type": "block_actions",
            "user": {"id": user, "username": self.users[user]["name"], "team_id": self.users[user]["team_id"]},
            "api_app_id": "A00000001",
            "team": {"id": TEAM, "domain": "lapse-test"},
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
            "channel": {"id": message.channel},
            "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks},
            "trigger_id": f"{next(self._ids)}.trigger",
            "response_url": self.response_url(message.channel, message.ts),
            "actions": [action],
        }

    # --- the HTTP API -------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        try:
            if request.method == "POST":
                content_type = request.content_type
                if content_type == "application/json":
                    body = await request.json()
                    if not isinstance(body, dict):
                        raise SlackError("invalid_json")
                    args.update(body)
                elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                    args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
            result = self._answer(method, request.headers.get("Authorization"), args)
        except SlackError as error:
            self._record(method, args, error.error, error.status)
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
            return web.json_response({"ok": False, "error": error.error}, status=error.status, headers=headers)
        self._record(method, args, None, 200)
        return web.json_response({"ok": True, **result})

    def _record(self, method: str, args: dict[str, Any], error: str | None, status: int) -> None:
        with self._lock:
            self.calls.append(Call(method, args, error is None, error, status, time.monotonic()))

    def _answer(self, method: str, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.failing > 0:
                self.failing -= 1
                raise SlackError("service_unavailable", status=503)
        if not authorization:
            raise SlackError("not_authed")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise SlackError("invalid_auth")
        handlers = {
            "chat.postMessage": self._post,
            "chat.update": self._update,
            "users.lookupByEmail": self._lookup,
            "users.info": self._info,
            "auth.test": lambda _: {"user_id": "UBOT", "team_id": TEAM, "bot_id": "B00000001"},
        }
        handler = handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method", status=404)
        with self._lock:
            return handler(args)

    def _limit(self, method: str, scope: str) -> None:
        """Take a token of ``method``'s bucket (per ``scope``), or answer 429 with when to come back."""
        if method == "chat.postMessage":
            per_second, burst = self.limits.post_per_channel, float(self.limits.post_burst)
        else:
            per_minute = self.limits.tier3_per_minute if TIERS[method] == 3 else self.limits.tier4_per_minute
            per_second, burst = per_minute / 60, float(self.limits.tier_burst)
        bucket = self._buckets.setdefault((method, scope), _Bucket(per_second, burst))
        wait = bucket.take()
        if wait is not None:
            raise SlackError("ratelimited", status=429, retry_after=max(1, math.ceil(wait)))

    def _channel_id(self, given: str) -> str | None:
        if given in self.channels:
            return given
        name = given.lstrip("#")
        return next((c for c, n in self.channels.items() if n == name), None)

    def _destination(self, given: Any) -> tuple[str, str | None]:
        """The channel a message to ``given`` goes to, and the user of a direct message."""
        if not isinstance(given, str) or not given:
            raise SlackError("channel_not_found")
        if given in self.users:
            return f"D{given[1:]}", given
        if given.startswith("D") and f"U{given[1:]}" in self.users:
            return given, f"U{given[1:]}"
        channel = self._channel_id(given)
        if channel is None:
            raise SlackError("channel_not_found")
        if channel in self.outside:
            raise SlackError("not_in_channel")
        return channel, None

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, user = self._destination(args.get("channel"))
        text, blocks = _content(args)
        self._limit("chat.postMessage", channel)
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        message = Message(channel, ts, text, blocks, user, time.monotonic())
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": {"text": text, "blocks": blocks, "ts": ts}}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        message = self.messages.get((str(channel), str(ts)))
        if message is None:
            raise SlackError("message_not_found")
        text, blocks = _content(args)
        self._limit("chat.update", "workspace")
        message.text, message.blocks = text, blocks
        message.updates.append({"text": text, "blocks": blocks, "via": "chat.update"})
        return {"channel": message.channel, "ts": message.ts, "text": text}

    def _lookup(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email", "")).strip().lower()
        if not email:
            raise SlackError("invalid_arguments")
        self._limit("users.lookupByEmail", "workspace")
        user = next((u for u in self.users.values() if u["profile"]["email"].lower() == email), None)
        if user is None or user["deleted"]:
            raise SlackError("users_not_found")
        return {"user": user}

    def _info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._limit("users.info", "workspace")
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    async def _response(self, request: web.Request) -> web.Response:
        """An interaction's ``response_url``: replace the message, or add an ephemeral reply to its clicker."""
        key = request.match_info["key"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        with self._lock:
            target = self._response_urls.get(key)
            if target is None:
                return web.Response(status=404, text="no_such_url")
            if not isinstance(body, dict):
                return web.Response(status=400, text="invalid_payload")
            target["uses"] += 1
            if target["uses"] > RESPONSE_URL_USES:
                return web.Response(status=404, text="used_url")
            self.responses.append({**body, "_url": key})
            self.calls.append(Call("response_url", body, True, None, 200, time.monotonic()))
            message = self.messages.get((target["channel"], target["ts"]))
            if body.get("replace_original") and message is not None:
                try:
                    text, blocks = _content(body)
                except SlackError as error:
                    return web.Response(status=400, text=error.error)
                message.text, message.blocks = text, blocks
                message.updates.append({"text": text, "blocks": blocks, "via": "response_url"})
        return web.Response(text="ok")


# --- Block Kit, as Slack checks it ------------------------------------------------------------------------


def _content(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = args.get("text") or ""
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):  # a form post carries them as JSON text
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(text, str) or not isinstance(blocks, list):
        raise SlackError("invalid_arguments")
    if not text and not blocks:
        raise SlackError("no_text")
    if len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    if len(blocks) > MAX_BLOCKS:
        raise SlackError("invalid_blocks")
    for block in blocks:
        _check_block(block)
    return text, blocks


def _check_block(block: Any) -> None:
    if not isinstance(block, dict):
        raise SlackError("invalid_blocks")
    if len(str(block.get("block_id", ""))) > MAX_BLOCK_ID:
        raise SlackError("invalid_blocks")
    kind = block.get("type")
    if kind == "header":
        _check_text(block.get("text"), MAX_HEADER_TEXT, plain=True)
    elif kind == "section":
        if "text" not in block and "fields" not in block:
            raise SlackError("invalid_blocks")
        if "text" in block:
            _check_text(block["text"], MAX_SECTION_TEXT)
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
            raise SlackError("invalid_blocks")
        for item in fields:
            _check_text(item, MAX_FIELD_TEXT)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS:
            raise SlackError("invalid_blocks")
        ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
        if len(ids) != len(set(ids)):  # action ids must be unique within a block
            raise SlackError("invalid_blocks")
        for element in elements:
            _check_button(element)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            raise SlackError("invalid_blocks")
        for element in elements:
            _check_text(element, MAX_SECTION_TEXT)
    elif kind != "divider":
        raise SlackError("invalid_blocks")


def _check_text(value: Any, limit: int, *, plain: bool = False) -> None:
    if not isinstance(value, dict) or value.get("type") not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        raise SlackError("invalid_blocks")
    text = value.get("text")
    if not isinstance(text, str) or not text or len(text) > limit:
        raise SlackError("invalid_blocks")


def _check_button(element: Any) -> None:
    if not isinstance(element, dict) or element.get("type") != "button":
        raise SlackError("invalid_blocks")
    _check_text(element.get("text"), MAX_BUTTON_TEXT, plain=True)
    if len(str(element.get("action_id", ""))) > MAX_ACTION_ID:
        raise SlackError("invalid_blocks")
    if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE or len(str(element.get("url", ""))) > MAX_URL:
        raise SlackError("invalid_blocks")
    if element.get("style") not in (None, "primary", "danger"):
        raise SlackError("invalid_blocks")


# --- what Slack sends Lapse -------------------------------------------------------------------------------


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack puts on a request it sends an app: ``X-Slack-Signature`` is ``v0=`` and the HMAC-SHA256
    of ``v0:<timestamp>:<body>`` under the app's signing secret."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(signing_secret.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(at),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def interaction_body(payload: dict[str, Any]) -> bytes:
    """An interaction as Slack POSTs it: a form with one field, ``payload``, holding the JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()

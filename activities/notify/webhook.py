"""Webhooks: every notice as signed JSON, for a SIEM, a ticketing system or a chat bridge.

The payload (``payload``) and its signature (``sign``) are documented in the README ("Webhooks"): a receiver
checks ``X-Lapse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the shared secret>``,
refuses a timestamp older than a few minutes, and drops a ``X-Lapse-Delivery`` it has already seen (a send
that timed out is sent again with the same one). The JSON carries people's own words (comments) as they wrote
them: a receiver escapes them for wherever it shows them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from access.connectors import ConnectorError
from access.notifications import Channel
from activities.connectors.secrets import secret
from activities.notify import DeliveryError, Outgoing, Sent
from activities.notify.config import WebhookTarget
from activities.notify.posting import checked_url, client, post

VERSION = 1
"""The payload's shape; a change that could break a receiver comes with a new version."""
MAX_STRING = 4000
"""Longer strings in a payload are cut (with ``…``): a receiver never gets an unbounded body from one comment."""
TOLERANCE = 300
"""How old (seconds) a signed timestamp may be for :func:`verify` to accept it."""


def payload(outgoing: Outgoing) -> dict[str, Any]:
    """The JSON body of ``outgoing`` (the README's "Webhooks" describes each field)."""
    notice = outgoing.notice
    body = {
        "version": VERSION,
        "id": outgoing.key,
        "event": f"lapse.{notice.kind.value}",
        "kind": notice.kind.value,
        "action": notice.action,
        "subject": notice.subject,
        "role": notice.role,
        "requester": notice.requester,
        "actor": notice.actor,
        "recipient": notice.recipient,
        "text": notice.text,
        "occurred_at": notice.at.isoformat(),
        "details": notice.details,
        "links": {
            "request": outgoing.links.request,
            "approvals": outgoing.links.approvals,
            "extend": outgoing.links.extend,
        },
    }
    bounded: dict[str, Any] = _bounded(json.loads(json.dumps(body, default=str)))
    return bounded


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON with sorted keys."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sign(secret_value: str, timestamp: int, body: bytes) -> str:
    """The ``X-Lapse-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret_value.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret_value: str, header: str, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE
) -> bool:
    """Whether ``header`` (an ``X-Lapse-Signature``) signs ``body`` with ``secret_value``, recently: what a
    receiver written in Python does (any ``v1=`` given may match, so a secret can be rotated)."""
    parts = [item.partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in parts if key.strip() == "t"]
    given = [value.strip() for key, _, value in parts if key.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not given:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret_value, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, value) for value in given)


class WebhookSender:
    """POSTs each notice to one configured webhook, signed with its secret."""

    channel = Channel.WEBHOOK

    def __init__(self, target: WebhookTarget, *, http: httpx.AsyncClient | None = None) -> None:
        self.target = target
        self._http = http or client()
        self._own_http = http is None

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        return False  # each message stands alone

    async def send(self, outgoing: Outgoing) -> Sent:
        what = f"webhook {self.target.name}"
        try:
            key = secret(
                env=self.target.secret_env, file=self.target.secret_file, what=f"the secret of {what}", field="secret"
            )
        except ConnectorError as error:
            raise DeliveryError(str(error), permanent=True) from None
        url = checked_url(str(self.target.url), field=f"{what} url")
        body = encode(payload(outgoing))
        headers = {
            "X-Lapse-Event": f"lapse.{outgoing.notice.kind.value}",
            "X-Lapse-Delivery": outgoing.key,
            "X-Lapse-Signature": sign(key, int(time.time()), body),
        }
        response = await post(self._http, url, body, headers, what=what, secrets=[key])
        return Sent(ref={"status": response.status_code})

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _bounded(value: Any) -> Any:
    """``value`` with every string cut to ``MAX_STRING`` characters."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[: MAX_STRING - 1] + "…"
    if isinstance(value, dict):
        return {key: _bounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bounded(item) for item in value]
    return value

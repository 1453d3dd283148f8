"""POSTing JSON to a notification endpoint (webhooks, Teams): one request, and what its answer means.

A server that is down, slow, overloaded (5xx), asks to wait (429) or timed the request out (408) is tried again
later; any other refusal (4xx, a redirect) will not change by itself and is permanent, so it is recorded and
shown on the request instead of retried for an hour. Errors never quote a secret (a Teams URL is one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from access.connectors import ConnectorError
from activities.connectors.secrets import check_host, scrub, secret_forms
from activities.notify import DeliveryError

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
"""A receiver that takes longer is treated as down: the send is tried again later, and the dispatcher's other
sends are not held up behind it."""
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0
USER_AGENT = "Lapse-Notifications/1"


def client() -> httpx.AsyncClient:
    """An HTTP client for notification endpoints: no redirects followed (a body signed for one URL is not
    replayed to another), short timeouts."""
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT})


def checked_url(url: str, *, field: str, secrets: Iterable[str] = ()) -> httpx.URL:
    """``url`` parsed, an http(s) URL to a host integrations may reach; a permanent DeliveryError if not."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise DeliveryError(f"{field} is not a URL", permanent=True) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DeliveryError(f"{field} must be an http(s) URL", permanent=True)
    try:
        check_host(parsed.host, field=field)
    except ConnectorError as error:
        raise DeliveryError(_clean(str(error), secrets), permanent=True) from None
    return parsed


async def post(
    http: httpx.AsyncClient,
    url: httpx.URL,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    secrets: Iterable[str] = (),
) -> httpx.Response:
    """POST ``body`` to ``url``; the response if it is a success (2xx), else a DeliveryError saying whether to
    try again. ``what`` names the endpoint in errors; ``secrets`` are scrubbed out of them."""
    try:
        response = await http.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    except httpx.TimeoutException:
        raise DeliveryError(f"{what} did not answer in time") from None
    except httpx.HTTPError as error:
        raise DeliveryError(_clean(f"{what} could not be reached: {type(error).__name__}: {error}", secrets)) from None
    if response.is_success:
        return response
    raise refusal(response, what=what, secrets=secrets)


def refusal(response: httpx.Response, *, what: str, secrets: Iterable[str] = ()) -> DeliveryError:
    """What a non-2xx answer means: retryable for 408/425/429 and 5xx (with the ``Retry-After`` it gave),
    permanent otherwise."""
    status = response.status_code
    said = _clean(" ".join(response.text[:200].split()), secrets)
    message = f"{what} answered {status}" + (f": {said}" if said else "")
    if status in RETRYABLE_4XX or status >= 500:
        return DeliveryError(message, retry_after=retry_after(response.headers.get("Retry-After")))
    if response.is_redirect:
        message += " (a redirect, not followed: configure the URL it leads to)"
    return DeliveryError(message, permanent=True)


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now, at most an hour; None if absent
    or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _clean(text: str, secrets: Iterable[str]) -> str:
    forms: set[str] = set()
    for value in secrets:
        forms |= secret_forms(value)
    return scrub(text, forms)

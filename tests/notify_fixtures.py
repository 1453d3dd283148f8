"""Fixtures for notification tests: a dispatcher running beside the test, and a sender that records.

``dispatcher`` sends the outbox with the senders the stored ``notifications`` section configures (set it with
``configure_notifications``), retrying fast; ``start_dispatcher`` starts one with senders of the test's own
(a :class:`RecordingSender`). tests/conftest.py makes both available to every test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from access.notifications import Channel
from activities.notify import DeliveryError, Outgoing, Sender, Sent
from activities.notify.config import NotificationSettings
from activities.notify.dispatcher import Backoff, Dispatcher, SenderKey
from store import notifications as outbox
from store.db import session_scope
from store.settings import Settings

FAST = Backoff(first=timedelta(milliseconds=50), most=timedelta(milliseconds=200), attempts=4, give_up_after=None)
"""Retries a test can wait for: four tries within half a second."""


@dataclass
class RecordingSender:
    """A sender that keeps what it was given; ``fail`` makes each send fail (retryable unless ``permanent``)."""

    channel: Channel = Channel.EMAIL
    sent: list[Outgoing] = field(default_factory=list)
    attempts: list[Outgoing] = field(default_factory=list)
    fail: str | None = None
    permanent: bool = False
    delay: float = 0.0
    skip: Callable[[Outgoing], str | None] = lambda _outgoing: None
    closed: bool = False
    reads: Callable[[str], bool] = lambda _kind: True
    """Which kinds' sends read what earlier messages made (``Sender.reads_previous``)."""

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        return self.reads(kind)

    async def send(self, outgoing: Outgoing) -> Sent:
        self.attempts.append(outgoing)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise DeliveryError(self.fail, permanent=self.permanent)
        skipped = self.skip(outgoing)
        if skipped is not None:
            return Sent(skipped=skipped)
        self.sent.append(outgoing)
        return Sent(ref={"message": f"m{outgoing.id}"})

    async def close(self) -> None:
        self.closed = True

    def told(self, kind: str | None = None) -> list[tuple[str | None, str]]:
        """(recipient, kind) of each message sent, of ``kind`` if given."""
        return [(o.recipient, o.notice.kind.value) for o in self.sent if kind is None or o.notice.kind.value == kind]


def configure_notifications(settings: Settings, section: Mapping[str, Any] | None) -> None:
    """Store a ``notifications:`` section, as loading the organisation file does (validated first)."""
    body = NotificationSettings.model_validate(dict(section)).model_dump(mode="json") if section else None
    with session_scope(settings.db_url) as session:
        outbox.save_section(session, outbox.NOTIFICATIONS, body, "test", now=datetime.now(UTC))


StartDispatcher = Callable[..., contextlib.AbstractAsyncContextManager[Dispatcher]]


@pytest.fixture
def start_dispatcher(settings: Settings) -> StartDispatcher:
    """``async with start_dispatcher({(Channel.EMAIL, ""): sender}) as dispatcher:`` — a dispatcher of the
    test's app DB with those senders (None: built from the stored section), fast retries and polls."""

    @contextlib.asynccontextmanager
    async def start(
        senders: Mapping[SenderKey, Sender] | None = None, *, backoff: Backoff = FAST, **options: Any
    ) -> AsyncIterator[Dispatcher]:
        options.setdefault("poll", 0.05)
        async with Dispatcher(settings.db_url, settings, senders, backoff=backoff, **options) as running:
            yield running

    return start


@pytest_asyncio.fixture
async def dispatcher(start_dispatcher: StartDispatcher) -> AsyncIterator[Dispatcher]:
    """A dispatcher sending with the senders of the stored ``notifications`` section (fast retries)."""
    async with start_dispatcher() as running:
        yield running

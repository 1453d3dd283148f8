"""The demo's mail catcher: an SMTP server (``aiosmtpd``) that keeps each message it gets as an ``.eml`` file.

``lapse run`` starts one with the demo organisation, whose ``notifications.email`` points at it, so a new user
sees Lapse's emails without any mail account: each is a file in ``<data_dir>/mail`` that any mail client (or a
text editor) opens. It accepts mail for anyone and sends nothing on: it listens on this machine only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from store.db import session_scope
from store.notifications import NOTIFICATIONS, save_section, section

MAX_MESSAGE = 10 * 1024 * 1024
"""A notification is a few kilobytes; anything this big is not one of Lapse's."""


class KeepAsFiles:
    """An aiosmtpd handler writing each message to ``directory`` as ``<time>-<n>-<first recipient>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode()
        recipient = _safe(envelope.rcpt_tos[0] if envelope.rcpt_tos else "nobody")
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{next(self._count):04d}-{recipient}.eml"
        await asyncio.to_thread(self._write, name, content)
        return "250 Message kept"

    def _write(self, name: str, content: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{name}.part"
        partial.write_bytes(content)
        os.replace(partial, self.directory / name)  # a reader never sees half a message


class MailCatcher:
    """The catcher's server in the running event loop: ``await start()`` (its port), ``await stop()``."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.handler = KeepAsFiles(directory)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen (on a free port if ``port`` is 0); the port listened on."""
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def messages(self) -> list[Path]:
        """The messages kept so far, oldest first."""
        return sorted(self.directory.glob("*.eml"))

    def _session(self) -> SMTP:
        return SMTP(self.handler, hostname="lapse-mail-catcher", data_size_limit=MAX_MESSAGE, decode_data=False)


@contextlib.contextmanager
def catching_mail(directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[MailCatcher]:
    """Run a catcher in a thread of its own until the block ends (``lapse run``); an OSError if the port is
    taken."""
    catcher = MailCatcher(directory, host=host, port=port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[OSError] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(catcher.start())
        except OSError as error:
            failed.append(error)
            return
        finally:
            ready.set()
        loop.run_forever()
        loop.run_until_complete(catcher.stop())

    thread = threading.Thread(target=run, name="mail-catcher", daemon=True)
    thread.start()
    ready.wait()
    try:
        if failed:
            raise failed[0]
        yield catcher
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()


@contextlib.contextmanager
def demo_mail(db_url: str, directory: Path, *, port: int) -> Iterator[MailCatcher]:
    """The demo's catcher (``lapse run``): running on 127.0.0.1 until the block ends, with the stored
    ``notifications.email`` pointed at the port it got when the demo's email goes to this machine (the demo
    organisation file says port 2525; ``LAPSE_DEMO_MAIL_PORT`` may give another, 0 any free one)."""
    with catching_mail(directory, port=port) as catcher:
        with session_scope(db_url) as session:
            body = section(session, NOTIFICATIONS)
            email = (body or {}).get("email")
            if body and isinstance(email, dict) and email.get("host") in LOCAL and email.get("port") != catcher.port:
                changed = {**body, "email": {**email, "port": catcher.port}}
                save_section(session, NOTIFICATIONS, changed, "lapse run", now=datetime.now(UTC))
        yield catcher


LOCAL = ("127.0.0.1", "localhost")


def _safe(address: str) -> str:
    """An address as part of a file name: letters, digits, ``@._-`` only, short."""
    return re.sub(r"[^A-Za-z0-9@._-]", "_", address)[:64] or "nobody"

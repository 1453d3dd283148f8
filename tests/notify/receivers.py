"""Real local servers that notifications are sent to in tests: SMTP (aiosmtpd) and HTTP (webhooks, Teams).

Each records what it received and answers as the test tells it to (a status, a delay), so a sender is tested
over its real protocol, from connection to answer.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from access.notifications import Notice, NoticeKind
from activities.connectors.secrets import SecretPolicy, use_secret_policy
from activities.notify import Links, Outgoing
from activities.notify.catcher import MailCatcher
from activities.notify.messages import links_for
from store.settings import Settings

BASE_URL = "https://lapse.example.com"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Iterator[Path]:
    """A secret policy for the test: the default ``LAPSE_`` env prefix and a secrets directory of its own."""
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    policy_ = SecretPolicy.from_settings(settings)
    policy_.secrets_dir.mkdir(parents=True)
    use_secret_policy(policy_)
    yield policy_.secrets_dir
    use_secret_policy(None)


@pytest_asyncio.fixture
async def smtp_server(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    """A real SMTP server (aiosmtpd, the demo's catcher) in the test's event loop, on a free port."""
    catcher = MailCatcher(tmp_path / "mail")
    await catcher.start()
    yield catcher
    await catcher.stop()


def read_mail(path: Path) -> EmailMessage:
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers ``status`` after ``delay`` seconds."""

    status: int = 200
    delay: float = 0.0
    answer_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay)
                answer = b'{"ok": false}' if receiver.status >= 300 else b""
                with contextlib.suppress(OSError):  # a client that gave up waiting is gone
                    self.send_response(receiver.status)
                    for name, value in receiver.answer_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


def notice(
    kind: NoticeKind = NoticeKind.DECISION_NEEDED,
    *,
    recipient: str | None = "linus@example.com",
    subject: str = "req-0123456789abcdef",
    **details: Any,
) -> Notice:
    return Notice(
        key=f"{subject}:3:step.opened:{kind.value}:{recipient or '*'}",
        kind=kind,
        recipient=recipient,
        subject=subject,
        role="ledger/payments-api/deploy",
        requester="alan@example.com",
        actor="alan@example.com",
        action="step.opened",
        text="Alan Turing asks for ledger/payments-api/deploy for 1 hour.",
        at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        details=details,
    )


def outgoing(
    notice_: Notice, *, channel: Any, target: str = "", base_url: str = BASE_URL, previous: list[Any] | None = None
) -> Outgoing:
    links: Links = links_for(notice_, base_url)
    return Outgoing(
        id=1,
        channel=channel,
        target=target,
        recipient=notice_.recipient,
        notice=notice_,
        links=links,
        key=f"{notice_.key}:{channel.value}:{target}",
        previous=previous or [],
    )


HOSTILE = (
    '=HYPERLINK("https://evil.example","<b>x</b>") <script>alert(1)</script> [x](https://evil.example) '
    '<a href="https://evil.example">click</a>\u202e\n' + "A" * 5000
)
"""A comment as an attacker would write it: a formula, markup, a Markdown link, a bidi override, a line break,
and length."""

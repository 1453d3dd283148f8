"""Email notifications through a real SMTP server (aiosmtpd): what arrives, where its links lead, and failures."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from access.notifications import Channel, NoticeKind
from activities.notify import DeliveryError
from activities.notify.catcher import MailCatcher
from activities.notify.config import EmailSettings
from activities.notify.email import EmailSender
from store.settings import Settings
from tests.conftest import Api
from tests.notify.receivers import HOSTILE, notice, outgoing, read_mail, secrets_dir, smtp_server
from tests.support import eventually

__all__ = ["secrets_dir", "smtp_server"]  # fixtures
pytestmark = pytest.mark.usefixtures("secrets_dir")

DEPLOY = "ledger/payments-api/deploy"


def email_settings(port: int, **more: Any) -> EmailSettings:
    return EmailSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "sender": "Lapse <lapse@example.com>", "security": "none", **more}
    )


class Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if tag == "a" and name == "href" and value]


def parts(mail: EmailMessage) -> tuple[str, str]:
    """The plain and HTML alternatives of a message Lapse sent."""
    assert mail.get_content_type() == "multipart/alternative"
    plain, html = (mail.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert plain is not None and html is not None
    return str(plain.get_content()), str(html.get_content())


async def test_email_arrives_as_text_and_html_and_its_links_open_the_request_for_its_recipient(
    api: Api, settings: Settings, smtp_server: MailCatcher
) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1H")
    await api.wait_for(created["id"], "pending")
    sender = EmailSender(email_settings(smtp_server.port))
    told = notice(NoticeKind.DECISION_NEEDED, subject=created["id"])

    sent = await sender.send(outgoing(told, channel=Channel.EMAIL, base_url=settings.external_url))

    (path,) = smtp_server.messages()
    mail = read_mail(path)
    assert mail["To"] == "linus@example.com"
    assert mail["Subject"] == f"Decision needed: {DEPLOY}"
    assert mail["Message-ID"] == sent.ref["message_id"]
    plain, html = parts(mail)
    assert "Alan Turing asks for ledger/payments-api/deploy" in plain
    in_text = re.findall(r"https?://\S+", plain)
    parser = Hrefs()
    parser.feed(html)
    assert set(parser.found) == set(in_text), "the HTML and the text alternatives link to the same pages"
    assert f"{settings.external_url}/requests/{created['id']}" in in_text
    assert f"{settings.external_url}/approvals" in in_text
    for link in in_text:
        assert link.startswith(settings.external_url + "/")
        path_only = urlsplit(link).path
        page = await api.http.get(path_only, headers={"X-Forwarded-Email": "linus@example.com"})
        assert page.status_code == 200, f"{link} for its recipient: {page.status_code}"
        if "/requests/" in path_only:
            assert DEPLOY in page.text
            outsider = await api.http.get(path_only, headers={"X-Forwarded-Email": "ken@example.com"})
            assert outsider.status_code == 403, "the link is no key: the page still checks who is signed in"


async def test_messages_about_one_request_thread_and_a_message_sent_again_keeps_its_id(
    smtp_server: MailCatcher,
) -> None:
    sender = EmailSender(email_settings(smtp_server.port))
    first = await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED), channel=Channel.EMAIL))
    decided = notice(NoticeKind.DECIDED, approved=True, comment="fine")
    later = await sender.send(outgoing(decided, channel=Channel.EMAIL, previous=[first.ref]))
    again = await sender.send(outgoing(decided, channel=Channel.EMAIL, previous=[first.ref]))
    other_request = await sender.send(outgoing(notice(subject="req-other"), channel=Channel.EMAIL))

    opened, reply, resent, other = (read_mail(path) for path in smtp_server.messages())
    assert reply["In-Reply-To"] == first.ref["message_id"]
    root = opened["References"].split()[0]
    assert reply["References"].split() == [root, first.ref["message_id"]]
    assert other["References"].split()[0] != root, "another request is another thread"
    assert again.ref == later.ref and resent["Message-ID"] == reply["Message-ID"]
    assert reply["Subject"] == f"Decided: {'ledger/payments-api/deploy'}"
    assert "Decision: approved" in parts(reply)[0]
    assert opened["Auto-Submitted"] == "auto-generated"
    assert other_request.ref["message_id"] != first.ref["message_id"]


async def test_hostile_comment_is_escaped_in_html_and_bounded_everywhere(smtp_server: MailCatcher) -> None:
    told = notice(NoticeKind.DECIDED, comment=HOSTILE, approved=False)
    await EmailSender(email_settings(smtp_server.port)).send(outgoing(told, channel=Channel.EMAIL))

    mail = read_mail(smtp_server.messages()[0])
    plain, html = parts(mail)
    parser = Hrefs()
    parser.feed(html)
    assert all(link.startswith("https://lapse.example.com/") for link in parser.found), parser.found
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\u202e" not in plain + html
    comment = next(line for line in plain.splitlines() if line.startswith("Comment: "))
    assert comment.startswith("Comment: '=HYPERLINK("), "a formula is shown, never run by a spreadsheet"
    assert len(comment) <= len("Comment: ") + 500 and comment.endswith("…")
    assert len(mail.as_bytes()) < 16_000


async def test_a_notice_to_nobody_is_skipped_and_a_bad_recipient_is_permanent(smtp_server: MailCatcher) -> None:
    sender = EmailSender(email_settings(smtp_server.port))
    skipped = await sender.send(outgoing(notice(recipient=None), channel=Channel.EMAIL))
    assert skipped.skipped
    with pytest.raises(DeliveryError) as refused:
        await sender.send(outgoing(notice(recipient="x@example.com\r\nBcc: all@example.com"), channel=Channel.EMAIL))
    assert refused.value.permanent
    assert smtp_server.messages() == []


class Answering:
    """An SMTP handler refusing each recipient with ``answer`` (a 4xx or 5xx line)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self.answer


Serve = Callable[..., Awaitable[int]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an SMTP server with a given handler (and SMTP options) on a free port; its port."""
    servers: list[asyncio.AbstractServer] = []

    async def start(handler: Any, **options: Any) -> int:
        server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("answer", "permanent"), [("550 5.1.1 no such mailbox", True), ("451 4.3.0 later", False)])
async def test_smtp_refusals_are_permanent_for_5xx_and_retried_for_4xx(
    serve: Serve, answer: str, permanent: bool
) -> None:
    port = await serve(Answering(answer))
    with pytest.raises(DeliveryError) as failed:
        await EmailSender(email_settings(port)).send(outgoing(notice(), channel=Channel.EMAIL))
    assert failed.value.permanent is permanent
    assert answer.split()[0] in str(failed.value)


async def test_an_unreachable_or_silent_server_is_retried(tmp_path: Path) -> None:
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)  # accepts, never greets
    port = int(silent.sockets[0].getsockname()[1])
    try:
        with pytest.raises(DeliveryError) as timed_out:
            await EmailSender(email_settings(port), timeout=0.5).send(outgoing(notice(), channel=Channel.EMAIL))
        assert not timed_out.value.permanent
    finally:
        silent.close()
    await silent.wait_closed()
    with pytest.raises(DeliveryError) as refused:
        await EmailSender(email_settings(port), timeout=2).send(outgoing(notice(), channel=Channel.EMAIL))
    assert not refused.value.permanent


class Login:
    def __init__(self, password: str) -> None:
        self.password = password

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password.decode() == self.password
        return AuthResult(success=ok, handled=False)


async def test_the_password_is_read_by_reference_when_sending_and_never_quoted(
    serve: Serve, secrets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catcher = MailCatcher(tmp_path / "mail")
    port = await serve(catcher.handler, authenticator=Login("s3cret-pass"), auth_require_tls=False)
    (secrets_dir / "smtp").write_text("s3cret-pass\n")
    by_file = email_settings(port, username="lapse", password_file="smtp")
    await EmailSender(by_file).send(outgoing(notice(), channel=Channel.EMAIL))
    assert len(catcher.messages()) == 1

    monkeypatch.setenv("LAPSE_SMTP_PASSWORD", "wrong-pass-value")
    wrong = email_settings(port, username="lapse", password_env="LAPSE_SMTP_PASSWORD")
    with pytest.raises(DeliveryError) as refused:
        await EmailSender(wrong).send(outgoing(notice(), channel=Channel.EMAIL))
    assert refused.value.permanent and "wrong-pass-value" not in str(refused.value)

    monkeypatch.delenv("LAPSE_SMTP_PASSWORD")
    with pytest.raises(DeliveryError) as unset:
        await EmailSender(wrong).send(outgoing(notice(), channel=Channel.EMAIL))
    assert unset.value.permanent and "LAPSE_SMTP_PASSWORD" in str(unset.value)


async def test_end_to_end_the_approver_is_emailed_and_the_decision_threads_under_it(
    api: Api, settings: Settings, smtp_server: MailCatcher, start_dispatcher: Any
) -> None:
    """Through the real workflow, the outbox and the dispatcher: who gets which email, and threading."""
    from tests.notify_fixtures import configure_notifications

    configure_notifications(
        settings,
        {"email": email_settings(smtp_server.port).model_dump(mode="json"), "default_channels": ["email"]},
    )
    async with start_dispatcher():
        created = await api.request("alan@example.com", DEPLOY, "PT1H")
        await api.wait_for(created["id"], "pending")
        asked = await eventually(
            lambda: [read_mail(p) for p in smtp_server.messages()],
            until=lambda mails: any(m["To"] == "linus@example.com" for m in mails),
            what="linus's decision-needed email",
        )
        first = next(m for m in asked if m["To"] == "linus@example.com")
        assert first["Subject"] == f"Decision needed: {DEPLOY}"
        await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "<b>ok</b>"})
        await api.wait_for(created["id"], "active")
        mails = await eventually(
            lambda: [read_mail(p) for p in smtp_server.messages()],
            until=lambda mails: {"Decided", "Granted"} <= {m["Subject"].split(":")[0] for m in mails},
            what="the requester's decided and granted emails",
        )
    told = sorted((m["To"], m["Subject"].split(":")[0]) for m in mails)
    assert told == [
        ("alan@example.com", "Decided"),
        ("alan@example.com", "Granted"),
        ("linus@example.com", "Decision needed"),
    ], "linus decided: he is told of nothing more"
    decided, granted = (next(m for m in mails if m["Subject"].startswith(kind)) for kind in ("Decided", "Granted"))
    assert decided["References"].split()[0] == granted["References"].split()[0], "alan's emails share a thread"
    assert first["References"].split()[0] != decided["References"].split()[0], "linus's thread is his own"
    plain, html = parts(decided)
    assert "Decision: approved" in plain and "<b>ok</b>" in plain and "&lt;b&gt;ok&lt;/b&gt;" in html

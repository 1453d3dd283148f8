"""The demo's mail catcher: what Lapse sends arrives as .eml files, and the demo's email points at it."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from access.notifications import Channel, NoticeKind
from activities.notify.catcher import catching_mail, demo_mail
from activities.notify.config import EmailSettings
from activities.notify.email import EmailSender
from starter.services.org import checked_connector, checked_section
from starter.stack import catch_demo_mail
from store.db import migrate, session_scope
from store.notifications import NOTIFICATIONS, section
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from tests.notify.receivers import notice, outgoing, read_mail, secrets_dir

__all__ = ["secrets_dir"]  # fixtures
pytestmark = pytest.mark.usefixtures("secrets_dir")


def demo_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'lapse.db'}"
    migrate(url)
    with session_scope(url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector, sections=checked_section)
    return url


async def test_each_message_is_kept_whole_as_an_eml_file_named_for_its_recipient(tmp_path: Path) -> None:
    with catching_mail(tmp_path / "mail") as catcher:
        settings = EmailSettings(host="127.0.0.1", port=catcher.port, sender="lapse@example.com", security="none")
        sender = EmailSender(settings)
        await sender.send(outgoing(notice(NoticeKind.DECISION_NEEDED), channel=Channel.EMAIL))
        await sender.send(outgoing(notice(NoticeKind.GRANTED, recipient="alan@example.com"), channel=Channel.EMAIL))
        kept = catcher.messages()
    assert [path.name.split("-", 2)[2] for path in kept] == ["linus@example.com.eml", "alan@example.com.eml"]
    assert read_mail(kept[1])["Subject"] == "Granted: ledger/payments-api/deploy"
    assert not list((tmp_path / "mail").glob(".*")), "no half-written file is left"


async def test_the_demo_email_points_at_the_port_the_catcher_got(tmp_path: Path) -> None:
    url = demo_db(tmp_path)
    with session_scope(url, write=False) as session:
        stored = section(session, NOTIFICATIONS)
    assert stored is not None and stored["email"]["port"] == 2525 and stored["email"]["host"] == "127.0.0.1"
    with demo_mail(url, tmp_path / "mail", port=0) as catcher:
        with session_scope(url, write=False) as session:
            moved = section(session, NOTIFICATIONS)
        assert moved is not None and moved["email"] == {**stored["email"], "port": catcher.port}
        sender = EmailSender(EmailSettings.model_validate(moved["email"]))
        await sender.send(outgoing(notice(), channel=Channel.EMAIL))
        assert len(catcher.messages()) == 1


def test_lapse_run_says_where_to_read_mail_or_why_there_is_none(tmp_path: Path) -> None:
    url = demo_db(tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=url, demo_mail_port=0, _env_file=None)  # type: ignore[call-arg]
    with contextlib.ExitStack() as cleanup:
        line = catch_demo_mail(settings, cleanup)
        assert line.strip() == f"Mail Lapse sent: {(tmp_path / 'mail').resolve()}/  (an .eml file per message; " + (
            "the demo sends no mail out)"
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = settings.model_copy(update={"demo_mail_port": taken.getsockname()[1]})
        with contextlib.ExitStack() as cleanup:
            assert "LAPSE_DEMO_MAIL_PORT" in catch_demo_mail(busy, cleanup)
    other = settings.model_copy(update={"org_file": tmp_path / "org.yaml"})
    with contextlib.ExitStack() as cleanup:
        assert catch_demo_mail(other, cleanup) == ""

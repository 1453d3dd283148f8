"""A reviewer's email end to end: a campaign started through ``review_runs.start_campaign`` on the dev server, the
outbox, the dispatcher and a real SMTP server (aiosmtpd). The reviewer gets one email for their items, whose link
opens their reviews page at that campaign; an item handed to another reviewer through the API tells them too."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.notify.catcher import MailCatcher
from starter.services import review_runs
from store.settings import Settings
from tests.conftest import Api, FakeTarget
from tests.e2e.test_review_campaigns import define, items
from tests.notify.receivers import read_mail, secrets_dir, smtp_server
from tests.notify_fixtures import StartDispatcher, configure_notifications
from tests.support import eventually
from tests.workflows.test_review_campaign import READ, held_externally

__all__ = ["secrets_dir", "smtp_server"]  # fixtures
pytestmark = pytest.mark.usefixtures("secrets_dir")

ADA, LINUS, KEN = "ada@example.com", "linus@example.com", "ken@example.com"
DESCRIPTION = "Who still needs to read the production database?"


def plain_text(mail: EmailMessage) -> str:
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def mails_to(smtp_server: MailCatcher, person: str) -> list[EmailMessage]:
    return [mail for mail in (read_mail(p) for p in smtp_server.messages()) if mail["To"] == person]


async def test_a_reviewer_is_emailed_once_and_the_link_opens_their_reviews_of_that_campaign(
    api: Api,
    env: WorkflowEnvironment,
    settings: Settings,
    target: FakeTarget,
    smtp_server: MailCatcher,
    start_dispatcher: StartDispatcher,
) -> None:
    # Alan and Barbara report to Linus, Grace to Ada: Linus reviews two items, Ada one.
    held_externally(settings, target, READ, ["alan@example.com", "barbara@example.com", "grace@example.com"])
    email = {"host": "127.0.0.1", "port": smtp_server.port, "sender": "Lapse <lapse@example.com>", "security": "none"}
    configure_notifications(settings, {"email": email, "default_channels": ["email"]})
    define(settings, name="prod-read", description=DESCRIPTION, scope={"roles": [READ]}, reminders=[])

    async with start_dispatcher():
        campaign_id = await review_runs.start_campaign(env.client, settings, "prod-read", started_by=ADA)
        (mail,) = await eventually(
            lambda: mails_to(smtp_server, LINUS), until=lambda found: len(found) >= 1, what="Linus's email"
        )
        await eventually(lambda: mails_to(smtp_server, ADA), until=lambda found: len(found) >= 1, what="Ada's email")

        assert mail["Subject"] == f"Access review, items to review: {DESCRIPTION}"
        text = plain_text(mail)
        assert f'The access review "{DESCRIPTION}" gives you 2 items to review by' in text
        links = re.findall(r"https?://\S+", text)
        assert links == [f"{settings.external_url}/reviews?campaign={campaign_id}"]
        link = urlsplit(links[0])
        page = await api.http.get(f"{link.path}?{link.query}", headers={"X-Forwarded-Email": LINUS})
        assert page.status_code == 200
        assert "alan@example.com" in page.text and "barbara@example.com" in page.text
        assert "grace@example.com" not in page.text, "Ada's item: not on Linus's page"
        other = await api.http.get(f"{link.path}?{link.query}", headers={"X-Forwarded-Email": KEN})
        assert other.status_code == 200 and "alan@example.com" not in other.text, "the link is no key"

        # Linus hands Alan's item to Ada (the fallback): she is told, in an email of its own.
        alan = items(settings, campaign_id)[("alan@example.com", READ)]
        await api.ok(LINUS, "POST", f"/api/reviews/items/{alan.id}/reassign", {"to": ADA, "comment": "yours"})
        ada = await eventually(
            lambda: mails_to(smtp_server, ADA), until=lambda found: len(found) == 2, what="Ada's second email"
        )

    first, second = (plain_text(m).splitlines()[0] for m in ada)
    assert first.startswith(f'The access review "{DESCRIPTION}" gives you 1 item to review by ')
    assert second.startswith(f'{LINUS} handed you 1 item of the access review "{DESCRIPTION}": review by ')
    assert "Comment: yours" in plain_text(ada[1]) and "Holder: alan@example.com" in plain_text(ada[1])
    assert len(mails_to(smtp_server, LINUS)) == 1, "one email for all his items, and none for handing one on"

"""The admin Notifications page in a real browser: each channel's set-up with its secrets as references (their
values nowhere on the page), a test message sent through the outbox and the dispatcher and its row refreshing
to how it went, and the message previews (the email's own HTML in a sandboxed frame under its own policy; Slack
and Teams drawn from their JSON); each through axe-core at 1280 and 360 px. Also a test message by real SMTP."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from access.notifications import Channel, NoticeKind
from activities.notify.catcher import MailCatcher
from starter.api.security import proxy_csrf_token
from starter.web.routes.admin_notifications import EMAIL_CSP
from store.settings import Settings
from tests.notify.receivers import read_mail, secrets_dir, smtp_server
from tests.notify_fixtures import RecordingSender, StartDispatcher, configure_notifications
from tests.support import eventually
from tests.web.conftest import check_accessibility
from tests.web.test_accessibility import fits

ADMIN = "ada@example.com"
BOT_TOKEN = "xoxb-1234-never-shown-anywhere"
TEAMS_URL = "https://example.webhook.office.com/workflows/abc?sig=never-shown-either"
SIEM_SECRET = "siem-shared-secret-never-shown"

__all__ = ["secrets_dir", "smtp_server"]  # fixtures


def _section(smtp_port: int = 2525) -> dict[str, object]:
    return {
        "email": {"host": "127.0.0.1", "port": smtp_port, "sender": "Lapse <lapse@example.com>", "security": "none"},
        "slack": {
            "token_env": "LAPSE_TEST_SLACK_TOKEN",
            "signing_secret_file": "slack-signing-secret",
            "channels": [{"channel": "#access-requests", "workflows": ["sensitive"]}],
        },
        "teams": [{"name": "access-requests", "url_env": "LAPSE_TEST_TEAMS_URL"}],
        "webhooks": [
            {"name": "siem", "url": "https://siem.example.com/hooks/lapse", "secret_env": "LAPSE_TEST_SIEM_SECRET"}
        ],
        "expiry_warning": "PT20M",
    }


@pytest.mark.usefixtures("secrets_dir")  # its own secrets directory, where the signing secret's file is not
async def test_an_admin_sees_each_channel_and_tests_them_without_any_secret_shown(
    as_user, settings: Settings, start_dispatcher: StartDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TEST_SLACK_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("LAPSE_TEST_TEAMS_URL", TEAMS_URL)
    monkeypatch.setenv("LAPSE_TEST_SIEM_SECRET", SIEM_SECRET)  # the signing secret's file is missing
    configure_notifications(settings, _section())
    email, teams = RecordingSender(Channel.EMAIL), RecordingSender(Channel.TEAMS)
    siem = RecordingSender(Channel.WEBHOOK, fail="siem.example.com answered 404", permanent=True)
    senders = {(Channel.EMAIL, ""): email, (Channel.TEAMS, "access-requests"): teams, (Channel.WEBHOOK, "siem"): siem}

    async with start_dispatcher(senders):
        ada = await as_user(ADMIN)
        page = await ada("/admin/notifications")
        await expect(page.get_by_role("heading", name="Notifications", exact=True)).to_be_visible()
        channels = page.locator("#channels")
        await expect(channels).to_contain_text("127.0.0.1:2525")
        await expect(channels).to_contain_text("token_env: LAPSE_TEST_SLACK_TOKEN resolves here")
        await expect(channels).to_contain_text("signing_secret_file: slack-signing-secret does not resolve here")
        await expect(channels).to_contain_text("url_env: LAPSE_TEST_TEAMS_URL resolves here")
        await expect(channels).to_contain_text("https://siem.example.com/hooks/lapse")
        await expect(channels).to_contain_text("workflows sensitive")
        await expect(channels).to_contain_text("PT20M before a grant ends")

        await page.get_by_role("button", name="Send me a test email").click()
        outcome = page.locator("#email-title ~ .outcome")
        await expect(outcome.locator("mark.state-sent")).to_be_visible()
        assert email.told() == [(ADMIN, NoticeKind.TEST.value)]
        assert email.sent[0].links.request.endswith("/admin/notifications")

        await page.get_by_role("button", name="Send a test to access-requests").click()
        teams_row = page.locator("table.destinations tr", has_text="access-requests")
        await expect(teams_row.locator("mark.state-sent")).to_be_visible()
        assert teams.told() == [(None, NoticeKind.TEST.value)]

        await page.get_by_role("button", name="Send a test to siem").click()
        failed = page.locator("table.destinations tr", has_text="siem").locator(".outcome")
        await expect(failed.locator("mark.state-failed")).to_be_visible()
        await expect(failed).to_contain_text("siem.example.com answered 404")

        for width in (1280, 360):
            page = await (await as_user(ADMIN, width=width))("/admin/notifications")
            await expect(page.locator("table.outbox tbody tr").first).to_contain_text("failed")  # failures first
            await expect(page.locator("#outbox .counts")).to_contain_text("sent 2")
            await page.locator("#section summary").click()
            await expect(page.locator("#section pre")).to_contain_text("token_env: LAPSE_TEST_SLACK_TOKEN")
            html = await page.content()
            for secret in (BOT_TOKEN, TEAMS_URL, "never-shown", SIEM_SECRET):
                assert secret not in html
            await check_accessibility(page, "admin-notifications" if width > 400 else "admin-notifications-360px")
            await fits(page, width)


async def test_previews_show_the_email_as_sent_and_draw_slack_and_teams(as_user, settings: Settings) -> None:
    for width in (1280, 360):
        ada = await as_user(ADMIN, width=width)
        suffix = "" if width > 400 else "-360px"

        page = await ada("/admin/notifications/preview?kind=decision_needed&channel=email")
        await expect(page.locator("#message")).to_contain_text("Decision needed: ledger/prod-db/write")
        body = page.frame_locator("iframe.email-body")
        await expect(body.get_by_role("heading", name="Decision needed: ledger/prod-db/write")).to_be_visible()
        await expect(body.get_by_role("link", name="Decide")).to_be_visible()
        # The email styles itself inline; under its own policy that is allowed, and nothing else is: no
        # violation was reported (a page error fails check_accessibility).
        await check_accessibility(page, f"admin-notification-preview-email{suffix}")
        await fits(page, width)

        page = await ada("/admin/notifications/preview?kind=decision_needed&channel=slack")
        slack = page.locator("#message")
        await expect(slack).to_contain_text("Preview drawn by Lapse from the message's blocks, not a Slack screenshot")
        await expect(slack.locator(".chat-button-primary")).to_have_text("Approve")
        await expect(slack.locator(".chat-button-danger")).to_have_text("Deny")
        await page.locator("#preview details summary").click()
        await expect(page.locator("#preview details pre")).to_contain_text('"action_id": "lapse.approve"')
        await check_accessibility(page, f"admin-notification-preview-slack{suffix}")
        await fits(page, width)

        page = await ada("/admin/notifications/preview?kind=expiring_soon&channel=teams")
        teams = page.locator("#message")
        await expect(teams).to_contain_text("not a Teams screenshot")
        await expect(teams.locator(".chat-box-warning")).to_contain_text("Ending soon: ledger/prod-db/write")
        await expect(teams.locator(".chat-button-primary")).to_contain_text("Extend")
        await check_accessibility(page, f"admin-notification-preview-teams{suffix}")
        await fits(page, width)


async def test_every_kind_previews_on_every_channel_and_the_email_body_has_its_own_policy(web: str) -> None:
    async with httpx.AsyncClient(base_url=web, headers={"X-Forwarded-Email": ADMIN}) as http:
        for kind in NoticeKind:
            for channel in ("email", "slack", "teams"):
                response = await http.get("/admin/notifications/preview", params={"kind": kind, "channel": channel})
                assert response.status_code == 200, (kind, channel)
            body = await http.get("/admin/notifications/preview/email", params={"kind": kind})
            assert body.status_code == 200 and body.text.startswith("<!doctype html>")
            assert body.headers["content-security-policy"] == EMAIL_CSP
        wrong = await http.get("/admin/notifications/preview", params={"kind": "gossip", "channel": "slack"})
        assert wrong.status_code == 422 and "kind" in wrong.text
        alan = await http.get("/admin/notifications/preview/email", headers={"X-Forwarded-Email": "alan@example.com"})
        assert alan.status_code == 403 and "<table" not in alan.text


async def test_a_test_email_arrives_over_smtp_and_a_test_to_nowhere_is_refused(
    web: str, settings: Settings, start_dispatcher: StartDispatcher, smtp_server: MailCatcher
) -> None:
    configure_notifications(settings, _section(smtp_server.port))
    headers = {"X-Forwarded-Email": ADMIN, "X-CSRF-Token": proxy_csrf_token(settings, ADMIN), "HX-Request": "true"}
    async with start_dispatcher(), httpx.AsyncClient(base_url=web, headers=headers) as http:
        queued = await http.post("/admin/notifications/test", data={"channel": "email"})
        assert queued.status_code == 200 and "state-pending" in queued.text
        mails = await eventually(smtp_server.messages, what="the test email")
        mail = read_mail(mails[0])
        assert mail["Subject"] == "Test message from Lapse" and mail["To"] == ADMIN
        assert "/admin/notifications" in mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]

        nowhere = await http.post("/admin/notifications/test", data={"channel": "teams", "target": "nope"})
        assert nowhere.status_code == 422
        assert "no teams destination named &#39;nope&#39; is configured" in nowhere.text and "<nav" not in nowhere.text
        personal = await http.post("/admin/notifications/test", data={"channel": "webhook"})
        assert personal.status_code == 422 and "reaches a configured destination" in personal.text

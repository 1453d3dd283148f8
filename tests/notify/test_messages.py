"""The words every channel shares: titles people scan, links to Lapse's pages, and hostile text made plain."""

from __future__ import annotations

import pytest

from access.notifications import NoticeKind
from activities.notify.messages import FIELD_LIMIT, TITLE_LIMIT, links_for, message_for, plain
from tests.notify.receivers import HOSTILE, notice


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_kind_has_a_title_a_sentence_and_a_link_into_lapse(kind: NoticeKind) -> None:
    told = notice(kind).model_copy(update={"text": ""})
    message = message_for(told, links_for(told, "https://lapse.example.com/"))
    assert message.title and len(message.title) <= TITLE_LIMIT
    assert message.text.endswith(".")
    assert message.action and message.action_url.startswith("https://lapse.example.com/")


def test_links_lead_to_the_request_page_its_extend_form_and_the_inbox() -> None:
    links = links_for(notice(subject="req-a/b?c"), "https://lapse.example.com/")
    assert links.request == "https://lapse.example.com/requests/req-a%2Fb%3Fc"
    assert links.extend == links.request + "#extend"
    assert links.approvals == "https://lapse.example.com/approvals"
    expiring = notice(NoticeKind.EXPIRING_SOON)
    assert message_for(expiring, links_for(expiring, "https://x")).action_url == "https://x/requests/" + (
        expiring.subject + "#extend"
    )


def test_fields_say_who_decided_what_and_until_when() -> None:
    told = notice(NoticeKind.DECIDED, approved=False, comment="not this week", expires_at="2026-12-01T10:30:00+01:00")
    told = told.model_copy(update={"actor": "linus@example.com"})
    fields = dict(message_for(told, links_for(told, "https://x")).fields)
    assert fields["By"] == "linus@example.com"
    assert fields["Decision"] == "denied"
    assert fields["Comment"] == "not this week"
    assert fields["Ends"] == "2026-12-01 09:30 UTC"


def test_an_approver_is_shown_for_how_long_and_why_before_deciding() -> None:
    """A decision from a chat message or an email is only as good as what the message shows: the length and the
    reason asked for (an extension's own, for an extension); a decided notice does not repeat them."""
    asked = notice(NoticeKind.DECISION_NEEDED, duration="PT2H", justification="incident 4711: payments down")
    fields = dict(message_for(asked, links_for(asked, "https://x")).fields)
    assert (fields["For"], fields["Why"]) == ("PT2H", "incident 4711: payments down")

    extension = notice(
        NoticeKind.REMINDER,
        duration="PT2H",
        justification="incident 4711",
        extension=True,
        extension_duration="PT1H",
        extension_justification="still mitigating",
    )
    fields = dict(message_for(extension, links_for(extension, "https://x")).fields)
    assert (fields["For"], fields["Why"]) == ("PT1H", "still mitigating")

    decided = notice(NoticeKind.DECIDED, approved=True, duration="PT2H", justification="incident 4711")
    assert "Why" not in dict(message_for(decided, links_for(decided, "https://x")).fields)


def test_hostile_text_becomes_one_bounded_line_that_runs_nothing() -> None:
    shown = plain(HOSTILE)
    assert len(shown) == FIELD_LIMIT and shown.endswith("…")
    assert shown.startswith("'=HYPERLINK(")
    assert "\n" not in shown and "\u202e" not in shown
    assert plain("  two\r\nlines\tand\u200bzero-width ") == "two lines andzero-width"
    assert plain("@SUM(A1)") == "'@SUM(A1)" and plain("fine - really") == "fine - really"

"""The words of a review campaign's notices: titled by the campaign's description, linked to the reviewer's page
at that campaign, with the facts a reviewer checks (how many items, by when, and why they came)."""

from __future__ import annotations

from datetime import UTC, datetime

from access.notifications import Notice, NoticeKind
from activities.notify.email import text_body
from activities.notify.messages import TITLE_LIMIT, links_for, message_for
from tests.notify.receivers import HOSTILE

BASE = "https://lapse.example.com/"


def review_notice(kind: NoticeKind = NoticeKind.REVIEW_ASSIGNED, **details: object) -> Notice:
    return Notice(
        key="k",
        kind=kind,
        recipient="linus@example.com",
        subject="quarterly-20261201T090000",
        action="review.started",
        text="The access review gives you 2 items to review by 2026-12-15 09:00 UTC.",
        at=datetime(2026, 12, 1, 9, tzinfo=UTC),
        details={
            "campaign": "quarterly-20261201T090000",
            "definition": "quarterly",
            "description": "Quarterly prod access",
            "deadline": "2026-12-15T09:00:00+00:00",
            **details,
        },
    )


def test_an_assignment_is_titled_by_its_campaign_and_links_to_that_campaigns_reviews() -> None:
    told = review_notice(reason="started", items=2)
    links = links_for(told, BASE)
    assert links.request == "https://lapse.example.com/reviews?campaign=quarterly-20261201T090000"
    message = message_for(told, links)
    assert message.title == "Access review, items to review: Quarterly prod access"
    assert (message.action, message.action_url) == ("Review your items", links.request)
    fields = {"Campaign": "quarterly-20261201T090000", "Items": "2", "Due": "2026-12-15 09:00 UTC"}
    assert dict(message.fields) == fields
    assert "Review your items: https://lapse.example.com/reviews?campaign=quarterly-20261201T090000" in text_body(
        message, None
    )


def test_a_reminder_copy_names_the_reports_and_an_escalation_says_why() -> None:
    copy = review_notice(NoticeKind.REVIEW_REMINDER, open=3, copy=True, reports={"grace@example.com": 3})
    message = message_for(copy, links_for(copy, BASE))
    assert message.title == "Reminder, access review items open: Quarterly prod access"
    assert dict(message.fields)["Their reports"] == "grace@example.com (3 open)"
    escalated = review_notice(reason="escalated", items=5)
    fields = dict(message_for(escalated, links_for(escalated, BASE)).fields)
    assert fields["Why"] == "nobody decided them by the deadline: escalated to you"


def test_a_hostile_description_or_an_odd_campaign_id_stays_plain_and_bounded() -> None:
    told = review_notice(description=HOSTILE).model_copy(update={"subject": "q&x=1#y"})
    links = links_for(told, BASE)
    assert links.request == "https://lapse.example.com/reviews?campaign=q%26x%3D1%23y"
    message = message_for(told, links)
    assert len(message.title) <= TITLE_LIMIT and "\n" not in message.title
    assert message.title.startswith("Access review, items to review: ")
    untitled = review_notice(description="")
    assert message_for(untitled, links).title == "Access review, items to review: quarterly"

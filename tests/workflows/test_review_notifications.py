"""A review campaign's notifications through its real workflow and activities on the time-skipping server: one
assignment per reviewer with their count, reminders to those with items open (and their managers' copies), the
fallback told of what escalates or comes from a leaver, and nothing queued twice when an activity runs again.
What a channel makes of them is tested with the senders; the email a reviewer gets end to end, in
tests/e2e/test_review_notifications.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from access.review_runs import CampaignRef, ReminderInput
from access.reviews import ReviewDefinition
from activities import review_notices
from activities.reviews import ReviewActivities
from store.db import session_scope
from store.tables import Notification, ReviewCampaign
from tests.notify_fixtures import configure_notifications
from tests.workflows.test_review_campaign import READ, Campaigns, campaigns, held_externally

__all__ = ["campaigns"]  # the review campaign tests' fixture

ADA, GRACE, LINUS, RADIA = "ada@example.com", "grace@example.com", "linus@example.com", "radia@example.com"

NOTIFICATIONS: dict[str, Any] = {
    "email": {"host": "127.0.0.1", "port": 2525, "sender": "lapse@example.com", "security": "none"},
    "default_channels": ["email"],
    "webhooks": [{"name": "siem", "url": "https://siem.example.com/lapse", "secret_env": "LAPSE_SIEM_SECRET"}],
}
"""Email to each person; every event, once, to the SIEM."""


def outbox(campaigns: Campaigns, campaign_id: str, kind: str) -> list[Notification]:
    with session_scope(campaigns.settings.db_url, write=False) as session:
        query = select(Notification).where(Notification.subject == campaign_id, Notification.kind == kind)
        return list(session.exec(query.order_by(col(Notification.id))))


def emailed(rows: list[Notification]) -> dict[str, dict[str, Any]]:
    """Each person's email notice (its details), by recipient; one each, or the test fails."""
    mails = [r for r in rows if r.channel == "email"]
    by_person = {r.recipient or "": dict(r.notice["details"]) for r in mails}
    assert len(by_person) == len(mails), f"someone was emailed twice: {[r.key for r in mails]}"
    return by_person


def with_barbara(campaigns: Campaigns) -> None:
    """Barbara holds the role too: Linus, her manager and Alan's, reviews two items."""
    held_externally(campaigns.settings, campaigns.target, READ, ["barbara@example.com"])
    configure_notifications(campaigns.settings, NOTIFICATIONS)


async def test_a_campaign_tells_each_reviewer_once_how_many_items_are_theirs_and_by_when(
    campaigns: Campaigns,
) -> None:
    with_barbara(campaigns)
    campaigns.define(description="Quarterly prod-db read", reminders=[])
    campaign_id = await campaigns.start()

    rows = outbox(campaigns, campaign_id, "review_assigned")
    told = emailed(rows)
    assert {person: details["items"] for person, details in told.items()} == {ADA: 1, GRACE: 1, LINUS: 2}
    deadline = campaigns.campaign(campaign_id).deadline
    for details in told.values():
        assert details["reason"] == "started" and details["campaign"] == campaign_id
        assert datetime.fromisoformat(details["deadline"]) == deadline
        assert details["description"] == "Quarterly prod-db read"
    linus = next(r for r in rows if r.recipient == LINUS)
    assert linus.notice["text"] == (
        f'The access review "Quarterly prod-db read" gives you 2 items to review by {deadline:%Y-%m-%d %H:%M} UTC.'
    )
    (siem,) = [r for r in rows if r.channel == "webhook"]
    assert siem.recipient is None and siem.notice["details"]["items"] == 4

    # The open activity run again (its worker died after committing): the campaign is open, nothing is queued.
    activities = ReviewActivities(campaigns.settings.db_url)
    activities.open_review_campaign(CampaignRef(campaign_id=campaign_id))
    # And the same assignment queued again by whatever path: its keys are taken, nothing is added.
    with session_scope(campaigns.settings.db_url) as session:
        campaign = session.get(ReviewCampaign, campaign_id)
        assert campaign is not None
        again = review_notices.queue_assigned(
            session,
            campaign,
            ReviewDefinition.model_validate(campaign.body),
            {ADA: 1, GRACE: 1, LINUS: 2},
            reason=review_notices.Reason.STARTED,
            seq="0",
            deadline=campaign.deadline,
            now=datetime.now(UTC),
            routes=review_notices.routes(session),
        )
    assert again == 0
    assert len(outbox(campaigns, campaign_id, "review_assigned")) == len(rows) == 4
    await campaigns.finish(campaign_id)


async def test_reminders_reach_only_reviewers_with_items_open_and_their_managers_copies(
    campaigns: Campaigns,
) -> None:
    with_barbara(campaigns)
    campaigns.define(remind_managers=True, reminders=["P7D"])
    campaign_id = await campaigns.start()
    # Ada decides Grace's item before the reminder: she has nothing open, and is reminded of nothing.
    with session_scope(campaigns.settings.db_url) as session:
        item = campaigns.items(campaign_id)[GRACE]
        row = session.merge(item)
        row.state, row.decision, row.decided_by, row.decided_at = "decided", "keep", ADA, datetime.now(UTC)
    await campaigns.finish(campaign_id)

    rows = outbox(campaigns, campaign_id, "review_reminder")
    told = emailed([r for r in rows if not r.notice["details"].get("copy")])
    assert {person: d["open"] for person, d in told.items()} == {GRACE: 1, LINUS: 2}, "Ada decided all hers"
    copies = emailed([r for r in rows if r.notice["details"].get("copy")])
    assert {person: d["reports"] for person, d in copies.items()} == {ADA: {GRACE: 1}, GRACE: {LINUS: 2}}, (
        "each reviewer's manager gets a copy (Grace both: she reviews, and manages Linus)"
    )
    assert told[GRACE]["reminder"] == "P7D before the deadline"
    assert (
        next(r for r in rows if r.recipient == ADA)
        .notice["text"]
        .startswith("A copy for you as their manager: grace@example.com has 1 item open in the access review")
    )
    assert len([r for r in rows if r.channel == "webhook"]) == 1

    # The reminder activity run again: found sent, nothing queued twice.
    label = told[GRACE]["reminder"]
    again = ReviewActivities(campaigns.settings.db_url).remind_reviewers(
        ReminderInput(campaign_id=campaign_id, label=label)
    )
    assert again == 0 and len(outbox(campaigns, campaign_id, "review_reminder")) == len(rows)


async def test_no_copy_to_managers_unless_the_definition_asks(campaigns: Campaigns) -> None:
    configure_notifications(campaigns.settings, NOTIFICATIONS)
    campaigns.define(reminders=["PT0S"])
    campaign_id = await campaigns.start()
    await campaigns.finish(campaign_id)
    told = emailed(outbox(campaigns, campaign_id, "review_reminder"))
    assert {person: d["open"] for person, d in told.items()} == {ADA: 1, GRACE: 1, LINUS: 1}
    assert not any(d.get("copy") for d in told.values())


async def test_the_fallback_reviewer_is_told_of_escalated_items_with_their_new_deadline(campaigns: Campaigns) -> None:
    configure_notifications(campaigns.settings, NOTIFICATIONS)
    campaigns.define(default="escalate", escalation_deadline="P7D", reminders=[])
    campaign_id = await campaigns.start()
    await campaigns.finish(campaign_id)

    escalated = [
        r for r in outbox(campaigns, campaign_id, "review_assigned") if r.notice["details"]["reason"] == "escalated"
    ]
    told = emailed(escalated)
    assert list(told) == [RADIA]
    assert told[RADIA]["items"] == 3
    escalation_deadline = campaigns.campaign(campaign_id).escalation_deadline
    assert datetime.fromisoformat(told[RADIA]["deadline"]) == escalation_deadline
    assert "escalated to you" in escalated[0].notice["text"]


async def test_a_leavers_items_are_announced_to_the_fallback_who_gets_them(campaigns: Campaigns) -> None:
    configure_notifications(campaigns.settings, NOTIFICATIONS)
    campaigns.define(reminders=[])
    campaign_id = await campaigns.start()
    campaigns.active(LINUS, False)  # Alan's manager leaves: his item goes to the fallback
    await campaigns.finish(campaign_id)

    moved = [
        r for r in outbox(campaigns, campaign_id, "review_assigned") if r.notice["details"]["reason"] == "reviewer_left"
    ]
    told = emailed(moved)
    assert {person: d["items"] for person, d in told.items()} == {RADIA: 1}
    assert told[RADIA]["left"] == [LINUS]


async def test_nothing_is_queued_while_no_notifications_are_configured(campaigns: Campaigns) -> None:
    configure_notifications(campaigns.settings, None)  # the demo organisation emails its catcher: not here
    campaigns.define(reminders=["PT0S"], default="escalate")
    campaign_id = await campaigns.start()
    await campaigns.finish(campaign_id)
    with session_scope(campaigns.settings.db_url, write=False) as session:
        assert session.exec(select(Notification).where(Notification.subject == campaign_id)).all() == []

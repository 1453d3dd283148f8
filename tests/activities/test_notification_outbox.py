"""The notification outbox and its dispatcher on a real app DB, with senders that record: queueing by channel
and route, retries and giving up (recorded and audited), leases between two dispatchers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlmodel import col, select

from access.notifications import Channel, Notice, NoticeKind
from activities.notify.config import NotificationSettings
from activities.notify.dispatcher import Backoff, Dispatcher, _Mark
from activities.notify.settings import routes_of
from store import notifications as outbox
from store.audit_log import audit_report
from store.db import engine_for, session_scope
from store.settings import Settings
from store.tables import AccessRequest, AuditEvent, Notification
from tests.notify_fixtures import RecordingSender, StartDispatcher
from tests.support import eventually
from worker import NOTIFIER_POLL

pytestmark = pytest.mark.every_app_db  # the claim's lease and the insert's conflicts are per backend

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALAN, LINUS, ADA = "alan@example.com", "linus@example.com", "ada@example.com"

SECTION: dict[str, Any] = {
    "email": {"host": "localhost", "port": 2525, "sender": "lapse@example.com", "security": "none"},
    "slack": {"token_env": "LAPSE_SLACK_TOKEN", "signing_secret_env": "LAPSE_SLACK_SIGNING"},
    "webhooks": [
        {"name": "siem", "url": "https://siem.example.com/lapse", "secret_env": "LAPSE_SIEM_SECRET"},
        {
            "name": "payments-tickets",
            "url": "https://tickets.example.com/in",
            "secret_env": "LAPSE_TICKETS_SECRET",
            "kinds": ["decision_needed"],
            "integrations": ["payments"],
        },
    ],
    "default_channels": ["email"],
}


def _notice(kind: NoticeKind, recipient: str | None, *, seq: int = 1, subject: str = "req-1") -> Notice:
    return Notice(
        key=f"{subject}:{seq}:x:{kind.value}:{recipient or '*'}",
        kind=kind,
        recipient=recipient,
        subject=subject,
        role="ledger/prod-db/admin",
        requester=ALAN,
        actor="lapse",
        action="step.opened",
        text="something happened",
        at=NOW,
        details={"workflow": "critical"},
    )


def _rows(settings: Settings) -> list[Notification]:
    with session_scope(settings.db_url, write=False) as session:
        return list(session.exec(select(Notification).order_by(col(Notification.id))))


def _queue(settings: Settings, *notices: Notice, section: dict[str, Any] = SECTION) -> int:
    routes = routes_of(NotificationSettings.model_validate(section))
    with session_scope(settings.db_url) as session:
        return outbox.queue(session, list(notices), routes, now=datetime.now(UTC))


def test_notices_go_by_each_persons_channels_and_broadcasts_by_route(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        outbox.save_preference(session, LINUS, [Channel.SLACK, Channel.EMAIL], now=NOW)
        outbox.save_preference(session, ADA, [], now=NOW)  # chose to be told by nothing
    notices = [_notice(NoticeKind.DECISION_NEEDED, who) for who in (ALAN, LINUS, ADA, None)]

    assert _queue(settings, *notices) == 4
    assert {(r.recipient, r.channel, r.target) for r in _rows(settings)} == {
        (ALAN, "email", ""),  # no choice: the default channels
        (LINUS, "slack", ""),
        (LINUS, "email", ""),
        (None, "webhook", "siem"),  # the other webhook takes payments' integration only
    }
    assert _queue(settings, *notices) == 0, "queueing the same event again queues nothing twice"


def test_a_route_filters_by_kind_workflow_and_integration(settings: Settings) -> None:
    section = {**SECTION, "webhooks": [{**SECTION["webhooks"][1], "integrations": ["ledger"]}]}
    assert _queue(settings, _notice(NoticeKind.GRANTED, None), section=section) == 0
    assert _queue(settings, _notice(NoticeKind.DECISION_NEEDED, None), section=section) == 1
    workflow_only = {**SECTION, "webhooks": [{**SECTION["webhooks"][0], "workflows": ["sensitive"]}]}
    assert _queue(settings, _notice(NoticeKind.DECISION_NEEDED, None, seq=2), section=workflow_only) == 0


async def test_earlier_messages_are_read_only_for_the_sends_whose_sender_uses_them(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    email = RecordingSender(Channel.EMAIL, reads=lambda kind: kind == NoticeKind.DECIDED)
    async with start_dispatcher({(Channel.EMAIL, ""): email}):
        _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS))
        await eventually(lambda: len(email.sent), until=lambda n: n == 1, what="the prompt sent")
        _queue(settings, _notice(NoticeKind.REMINDER, LINUS, seq=2), _notice(NoticeKind.DECIDED, LINUS, seq=3))
        await eventually(lambda: len(email.sent), until=lambda n: n == 3, what="the reminder and the decision sent")

    prompt, reminder, decided = email.sent
    assert reminder.previous == [], "a send whose sender does not read earlier messages is not given them"
    assert decided.previous == [{"message": f"m{prompt.id}"}, {"message": f"m{reminder.id}"}]


async def test_a_row_another_version_queued_for_an_unknown_channel_fails_visibly_and_the_rest_go(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    email = RecordingSender(Channel.EMAIL)
    _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS), _notice(NoticeKind.DECISION_NEEDED, ADA, seq=2))
    with session_scope(settings.db_url) as session:
        pigeon = session.exec(select(Notification).where(Notification.recipient == LINUS)).one()
        pigeon.channel = "pigeon"  # a channel a later Lapse may add, then rolled back
        session.add(pigeon)
    async with start_dispatcher({(Channel.EMAIL, ""): email}):
        await eventually(
            lambda: sorted(r.state for r in _rows(settings)), until=lambda s: s == ["failed", "sent"], what="both done"
        )

    assert email.told() == [(ADA, "decision_needed")], "the other row is not held up"
    failed = next(r for r in _rows(settings) if r.state == "failed")
    assert failed.recipient == LINUS and "'pigeon' is not a valid Channel" in (failed.error or "")
    with session_scope(settings.db_url, write=False) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.action == "notification.failed")).one()
    assert audited.details["channel"] == "pigeon" and audited.details["to"] == LINUS


def test_nothing_configured_queues_nothing(settings: Settings) -> None:
    assert _queue(settings, _notice(NoticeKind.GRANTED, ALAN), section={}) == 0
    assert _rows(settings) == []


async def test_the_dispatcher_sends_each_row_and_passes_what_earlier_messages_made(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    email = RecordingSender(Channel.EMAIL)
    webhook = RecordingSender(Channel.WEBHOOK)
    async with start_dispatcher({(Channel.EMAIL, ""): email, (Channel.WEBHOOK, "siem"): webhook}):
        _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS), _notice(NoticeKind.DECISION_NEEDED, None))
        await eventually(lambda: len(email.sent) + len(webhook.sent), until=lambda n: n == 2, what="two sends")
        _queue(settings, _notice(NoticeKind.DECIDED, LINUS, seq=2))
        await eventually(lambda: len(email.sent), until=lambda n: n == 2, what="the decision sent")

    first, decided = email.sent
    assert decided.previous == [{"message": f"m{first.id}"}], "a decision can update the message it follows"
    assert decided.links.request.endswith("/requests/req-1") and decided.key.endswith(":email:")
    assert webhook.sent[0].target == "siem" and webhook.sent[0].recipient is None
    assert {r.state for r in _rows(settings)} == {"sent"}
    assert all(r.ref and r.sent_at is not None for r in _rows(settings))
    assert email.closed, "stopping the dispatcher closes its senders"


async def test_a_failing_send_is_retried_then_given_up_on_the_request_and_in_the_audit(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    with session_scope(settings.db_url) as session:
        session.add(
            AccessRequest(id="req-1", requester=ALAN, role="ledger/prod-db/admin", state="active", created_at=NOW)
        )
    email = RecordingSender(Channel.EMAIL, fail="connection refused by smtp.example.com")
    async with start_dispatcher({(Channel.EMAIL, ""): email}):
        _queue(settings, _notice(NoticeKind.GRANTED, ALAN))
        failed = await eventually(
            lambda: _rows(settings)[0], until=lambda row: row.state == "failed", what="the send to be given up"
        )
    assert len(email.attempts) == 4 and failed.attempts == 4, "tried as often as the backoff says, no more"
    assert failed.error == "connection refused by smtp.example.com"
    with session_scope(settings.db_url, write=False) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "notification.failed")).one()
        shown = outbox.about(session, "req-1")
    assert event.target == "access-request-req-1" and event.reason == failed.error
    assert event.details["channel"] == "email" and event.details["to"] == ALAN and event.details["kind"] == "granted"
    assert [row.state for row in shown] == ["failed"], "the request's page lists it"


def test_a_give_up_recorded_twice_is_audited_once(settings: Settings) -> None:
    """Two dispatchers may give up on the same row (one after the other's lease ran out, or a commit whose outcome
    was unknown tried again): the row and the audit log say it once."""
    _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS))
    (row,) = _rows(settings)
    dispatcher = Dispatcher(settings.db_url, settings, {})
    for _ in range(2):
        dispatcher._finish_all([_Mark(row, "failed", "the mail server refused it", None)])
    (failed,) = _rows(settings)
    assert failed.state == "failed" and failed.attempts == 1
    with session_scope(settings.db_url, write=False) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.action == "notification.failed")).all()
    assert len(audited) == 1


async def test_an_outage_records_its_failed_tries_together_and_audits_every_give_up(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    """A channel down fails every row at once: each try is still kept (attempts, why) and each give-up audited,
    in a few shared transactions, not one per try, which would crowd out the grants' bookkeeping just then."""
    people = [f"user{i}@example.com" for i in range(30)]
    with session_scope(settings.db_url) as session:
        session.add(
            AccessRequest(id="req-1", requester=ALAN, role="ledger/prod-db/admin", state="active", created_at=NOW)
        )
    _queue(settings, *(_notice(NoticeKind.GRANTED, who) for who in people))
    writes = 0

    def count(_connection: Any) -> None:
        nonlocal writes
        writes += 1

    engine = engine_for(settings.db_url, writer=True)  # as session_scope asks for it (the cache is by arguments)
    sa_event.listen(engine, "begin", count)
    email = RecordingSender(Channel.EMAIL, fail="connection refused by smtp.example.com")
    try:
        backoff = Backoff(first=timedelta(milliseconds=50), attempts=2)
        async with start_dispatcher({(Channel.EMAIL, ""): email}, backoff=backoff, concurrency=30):
            rows = await eventually(
                lambda: _rows(settings),
                until=lambda rows: {r.state for r in rows} == {"failed"},
                what="every row given up",
            )
    finally:
        sa_event.remove(engine, "begin", count)
    assert len(email.attempts) == 60 and all(r.attempts == 2 for r in rows), "each row tried twice, as the backoff says"
    assert {r.error for r in rows} == {"connection refused by smtp.example.com"}
    with session_scope(settings.db_url, write=False) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.action == "notification.failed")).all()
        report = audit_report(session)
    assert sorted(e.details["to"] for e in audited) == sorted(people), "every give-up audited, once"
    assert report.intact, report.problems
    assert writes <= 15, f"{writes} writing transactions for 60 failed tries"


async def test_a_persons_next_message_goes_as_soon_as_the_one_it_waited_for_is_done(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    """A decision waits for the prompt it closes, then goes at once: not at the next poll (5 s here)."""
    email = RecordingSender(Channel.EMAIL, delay=0.05)
    async with start_dispatcher({(Channel.EMAIL, ""): email}, poll=5.0):
        await asyncio.sleep(0.1)  # the dispatcher's first look finds nothing
        started = asyncio.get_running_loop().time()
        _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS), _notice(NoticeKind.DECIDED, LINUS, seq=2))
        await eventually(lambda: len(email.sent), until=lambda n: n == 2, what="the prompt, then the decision")
        took = asyncio.get_running_loop().time() - started
    assert [o.notice.kind for o in email.sent] == [NoticeKind.DECISION_NEEDED, NoticeKind.DECIDED]
    assert took < 2.5, f"the decision waited {took:.1f} s, as if for the next poll"


async def test_a_notifiers_dispatcher_sends_the_next_message_at_its_next_look(
    settings: Settings, start_dispatcher: StartDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lapse notifier`` is not woken by the end of a send (it looks every 50 ms, and reads nothing more after
    each send): the decision still goes, after the prompt it closes."""
    looked: list[int] = []

    def followed(_session: object, rows: list[Notification]) -> bool:
        looked.append(len(rows))
        return False

    monkeypatch.setattr(outbox, "followed", followed)
    email = RecordingSender(Channel.EMAIL, delay=0.05)
    async with start_dispatcher({(Channel.EMAIL, ""): email}, poll=NOTIFIER_POLL, wake_followed=False):
        _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS), _notice(NoticeKind.DECIDED, LINUS, seq=2))
        await eventually(lambda: len(email.sent), until=lambda n: n == 2, what="the prompt, then the decision")
    assert [o.notice.kind for o in email.sent] == [NoticeKind.DECISION_NEEDED, NoticeKind.DECIDED]
    assert looked == []


async def test_a_permanent_failure_gives_up_at_once_and_a_skip_is_kept_with_why(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    email = RecordingSender(Channel.EMAIL, fail="550 no such mailbox", permanent=True)
    slack = RecordingSender(Channel.SLACK, skip=lambda _o: "Slack knows no one with this email")
    with session_scope(settings.db_url) as session:
        outbox.save_preference(session, LINUS, [Channel.SLACK], now=NOW)
    async with start_dispatcher({(Channel.EMAIL, ""): email, (Channel.SLACK, ""): slack}):
        _queue(settings, _notice(NoticeKind.GRANTED, ALAN), _notice(NoticeKind.GRANTED, LINUS))
        rows = await eventually(
            lambda: _rows(settings),
            until=lambda rows: {r.state for r in rows} == {"failed", "skipped"},
            what="one failed, one skipped",
        )
    assert len(email.attempts) == 1
    assert {(r.recipient, r.state, r.error) for r in rows} == {
        (ALAN, "failed", "550 no such mailbox"),
        (LINUS, "skipped", "Slack knows no one with this email"),
    }


async def test_a_channel_no_longer_configured_is_skipped_saying_so(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    _queue(settings, _notice(NoticeKind.GRANTED, None))  # to the siem webhook
    async with start_dispatcher({}):
        rows = await eventually(lambda: _rows(settings), until=lambda rows: rows[0].state != "pending", what="done")
    assert [(r.state, r.error) for r in rows] == [("skipped", "webhook is no longer configured")]


async def test_two_dispatchers_never_send_the_same_row(settings: Settings, start_dispatcher: StartDispatcher) -> None:
    one, two = RecordingSender(Channel.EMAIL, delay=0.01), RecordingSender(Channel.EMAIL, delay=0.01)
    people = [f"user{i}@example.com" for i in range(60)]
    async with (
        start_dispatcher({(Channel.EMAIL, ""): one}, concurrency=4),
        start_dispatcher({(Channel.EMAIL, ""): two}, concurrency=4),
    ):
        _queue(settings, *(_notice(NoticeKind.GRANTED, who) for who in people))
        await eventually(lambda: len(one.sent) + len(two.sent), until=lambda n: n >= 60, what="every row sent")
        await asyncio.sleep(0.2)  # room for a second send of any row, which must not come
    sent = [o.recipient or "" for o in one.sent + two.sent]
    assert sorted(sent) == sorted(people), "each row once, by one dispatcher or the other"
    assert one.sent and two.sent, "both took part"


async def test_a_row_whose_dispatcher_died_is_sent_after_its_lease(
    settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    _queue(settings, _notice(NoticeKind.GRANTED, ALAN))
    with session_scope(settings.db_url) as session:  # claimed by a worker that then died
        claimed = outbox.claim_due(session, now=datetime.now(UTC), lease=timedelta(milliseconds=300), limit=10)
    assert len(claimed) == 1
    email = RecordingSender(Channel.EMAIL)
    async with start_dispatcher({(Channel.EMAIL, ""): email}):
        await eventually(lambda: len(email.sent), until=lambda n: n == 1, what="the row sent after its lease")
    assert _rows(settings)[0].state == "sent"


def test_the_backoff_doubles_to_its_cap_and_honours_retry_after() -> None:
    backoff = Backoff()
    pauses = [backoff.pause(n).total_seconds() for n in (1, 2, 3, 9, 10, 30)]
    assert pauses == [1, 2, 4, 256, 300, 300]
    assert backoff.pause(3, retry_after=7).total_seconds() == 7


async def test_drain_sends_what_is_due_without_a_running_loop(settings: Settings) -> None:
    email = RecordingSender(Channel.EMAIL)
    _queue(settings, _notice(NoticeKind.GRANTED, ALAN), _notice(NoticeKind.GRANTED, LINUS))
    assert await Dispatcher(settings.db_url, settings, {(Channel.EMAIL, ""): email}).drain() == 2
    assert sorted(o.recipient or "" for o in email.sent) == [ALAN, LINUS]


def test_old_sent_and_skipped_rows_are_purged_and_failed_ones_kept(settings: Settings) -> None:
    """The outbox is not an archive: rows sent or skipped long ago go; a failed one stays on its request."""
    _queue(settings, *(_notice(NoticeKind.GRANTED, who, seq=1) for who in (ALAN, LINUS, ADA)))
    alan, linus, ada = (r.id or 0 for r in _rows(settings))
    long_ago = datetime.now(UTC) - timedelta(days=31)
    with session_scope(settings.db_url) as session:
        outbox.mark_sent(session, alan, ref={}, now=long_ago)
        outbox.mark_skipped(session, linus, why="nobody by that email", now=long_ago)
        outbox.mark_failed(session, ada, why="down", attempts=24, now=long_ago)
        for row in session.exec(select(Notification)):
            row.due_at = long_ago
            session.add(row)
    with session_scope(settings.db_url) as session:
        assert outbox.purge(session, before=datetime.now(UTC) - timedelta(days=30)) == 2
    assert [(r.recipient, r.state) for r in _rows(settings)] == [(ADA, outbox.FAILED)]


def test_a_loud_notice_goes_by_every_personal_channel_whatever_the_person_chose(settings: Settings) -> None:
    """Break-glass is told loudly: a preference for fewer channels (or none) does not quieten it."""
    with session_scope(settings.db_url) as session:
        outbox.save_preference(session, LINUS, [], now=NOW)  # chose to be told by nothing
    loud = _notice(NoticeKind.BREAK_GLASS, LINUS).model_copy(update={"details": {"loud": True}})
    _queue(settings, loud, _notice(NoticeKind.DECISION_NEEDED, LINUS, seq=2))
    assert {(r.kind, r.channel) for r in _rows(settings)} == {("break_glass", "slack"), ("break_glass", "email")}


def test_a_persons_later_message_about_a_request_waits_for_the_earlier_one(settings: Settings) -> None:
    """A decision closing an approver's Slack prompt must not be sent while the prompt itself is still retrying:
    it would find nothing to update, and the prompt would land later with live buttons."""
    _queue(settings, _notice(NoticeKind.DECISION_NEEDED, LINUS, seq=1), _notice(NoticeKind.DECIDED, LINUS, seq=2))
    _queue(settings, _notice(NoticeKind.DECISION_NEEDED, ADA, seq=1, subject="req-2"))
    first = min(r.id or 0 for r in _rows(settings) if r.recipient == LINUS)
    with session_scope(settings.db_url) as session:  # Linus's prompt is retrying, due again later
        outbox.mark_retry(session, first, why="rate limited", attempts=1, due_at=datetime.now(UTC) + timedelta(hours=1))
        claimed = outbox.claim_due(session, now=datetime.now(UTC), lease=timedelta(minutes=1), limit=10)
    assert {(r.recipient, r.kind) for r in claimed} == {(ADA, "decision_needed")}, "Linus's decision waits"

    with session_scope(settings.db_url) as session:
        outbox.mark_sent(session, first, ref={"ts": "1"}, now=datetime.now(UTC))
        claimed = outbox.claim_due(session, now=datetime.now(UTC), lease=timedelta(minutes=1), limit=10)
    assert [(r.recipient, r.kind) for r in claimed] == [(LINUS, "decided")]


def test_a_loud_notice_is_claimed_before_a_flood_queued_earlier(settings: Settings) -> None:
    """Break-glass must not wait behind a flood of ordinary requests' messages: it is claimed first."""
    _queue(settings, *(_notice(NoticeKind.DECISION_NEEDED, LINUS, seq=n, subject=f"req-{n}") for n in range(30)))
    loud = _notice(NoticeKind.BREAK_GLASS, ADA, subject="req-bg").model_copy(update={"details": {"loud": True}})
    _queue(settings, loud)
    with session_scope(settings.db_url) as session:
        claimed = outbox.claim_due(session, now=datetime.now(UTC), lease=timedelta(minutes=1), limit=1)
    assert [(r.recipient, r.kind) for r in claimed] == [(ADA, "break_glass")]

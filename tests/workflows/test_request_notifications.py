"""A request's notifications through the real workflow, worker, API and app DB: who is told what, once each,
and a chat or mail outage that delays messages and never the grant. Senders record (tests/notify_fixtures.py);
the channels' own protocols are tested with their senders."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from access.notifications import Channel
from access.requests import RecordInput, RequestStatus
from activities.requests import RequestActivities
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Notification
from tests.conftest import Api, load_into
from tests.notify_fixtures import RecordingSender, StartDispatcher, configure_notifications
from tests.support import eventually

DEPLOY = "ledger/payments-api/deploy"
ALAN, ADA, RADIA = "alan@example.com", "ada@example.com", "radia@example.com"

SECURITY_PAIR: dict[str, Any] = {
    "approval_workflows": [
        {
            "name": "security-pair",
            "rules": [
                {
                    "name": "any of security",
                    "steps": [{"name": "security", "approvers": [{"kind": "group", "name": "security"}]}],
                    "max_duration": "P1D",
                }
            ],
        }
    ],
    "assignments": [{"workflow": "security-pair", "scope": DEPLOY}],
}
"""Ada and Radia (the security group) may each approve alone: one decides, the other's message is updated."""

NOTIFICATIONS: dict[str, Any] = {
    "email": {"host": "localhost", "port": 2525, "sender": "lapse@example.com", "security": "none"},
    "webhooks": [{"name": "siem", "url": "https://siem.example.com/lapse", "secret_env": "LAPSE_SIEM_SECRET"}],
}


def _rows(settings: Settings, request_id: str) -> list[Notification]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(Notification).where(Notification.subject == request_id).order_by(col(Notification.id))
        return list(session.exec(query))


async def test_a_requests_lifecycle_tells_the_right_people_once_each(
    api: Api, settings: Settings, start_dispatcher: StartDispatcher
) -> None:
    load_into(settings, SECURITY_PAIR)
    configure_notifications(settings, NOTIFICATIONS)
    email, siem = RecordingSender(Channel.EMAIL), RecordingSender(Channel.WEBHOOK)
    async with start_dispatcher({(Channel.EMAIL, ""): email, (Channel.WEBHOOK, "siem"): siem}):
        created = await api.request(ALAN, DEPLOY, "PT1H")
        request_id = created["id"]
        await eventually(lambda: email.told(), until=lambda t: len(t) == 2, what="both approvers asked")
        assert sorted(email.told()) == [(ADA, "decision_needed"), (RADIA, "decision_needed")]

        await api.ok(RADIA, "POST", f"/api/requests/{request_id}/approve", {"comment": "go ahead"})
        await api.wait_for(request_id, "active")
        await api.ok(ADA, "POST", f"/api/requests/{request_id}/revoke", {"comment": "done for today"})
        await api.wait_for(request_id, "revoked")
        await eventually(lambda: email.told(), until=lambda t: len(t) == 6, what="every email sent")

    assert sorted(email.told()[2:]) == [
        (ADA, "decided"),  # the step is over: her message says so, and loses its buttons
        (ALAN, "decided"),
        (ALAN, "ended"),
        (ALAN, "granted"),
    ]
    decided = next(o for o in email.sent if o.recipient == ADA and o.notice.kind.value == "decided")
    assert decided.notice.actor == RADIA and decided.notice.details["comment"] == "go ahead"
    assert [ref["message"] for ref in decided.previous] == [
        f"m{o.id}" for o in email.sent if o.recipient == ADA and o.notice.kind.value == "decision_needed"
    ]
    assert [o.notice.kind.value for o in siem.sent] == ["decision_needed", "decided", "granted", "ended"]
    assert all(o.notice.subject == request_id for o in email.sent + siem.sent)

    # A record step replayed (its worker died after writing it) queues nothing again.
    rows = _rows(settings, request_id)
    assert len({r.key for r in rows}) == len(rows) == 10
    with session_scope(settings.db_url, write=False) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.target == f"access-request-{request_id}").order_by(col(AuditEvent.id))
        ).all()
        status = RequestStatus.model_validate(await api.status(request_id))
    opened = next(e for e in events if e.action == "step.opened")
    replayed = RecordInput(
        status=status,
        events=[{"actor": opened.actor, "action": opened.action, "target": opened.target, "details": opened.details}],
        seq=1,
    )
    RequestActivities(settings.db_url).record_request(replayed)
    assert len(_rows(settings, request_id)) == 10


async def test_the_grant_happens_on_time_while_every_send_fails(
    api: Api, settings: Settings, start_dispatcher: StartDispatcher, audit: Any
) -> None:
    configure_notifications(settings, NOTIFICATIONS)
    down = RecordingSender(Channel.EMAIL, fail="mail server down")
    async with start_dispatcher({(Channel.EMAIL, ""): down, (Channel.WEBHOOK, "siem"): down}):
        # ledger/prod-db/read for an hour at most needs no approval: granted at once.
        created = await api.request(ALAN, "ledger/prod-db/read", "PT20S")
        status = await api.wait_for(created["id"], "active", timeout=15)
        assert status["granted_at"] is not None
        await api.wait_for(created["id"], "expired", timeout=60)
        rows = await eventually(
            lambda: _rows(settings, created["id"]),
            until=lambda rows: rows and all(r.state == "failed" for r in rows),
            what="every notification given up",
        )
    assert {(r.recipient, r.kind) for r in rows} >= {(ALAN, "granted"), (ALAN, "ended")}
    failures = [e for e in audit(f"access-request-{created['id']}") if e.action == "notification.failed"]
    assert len(failures) == len(rows) and all(e.reason == "mail server down" for e in failures)
    assert not down.sent and len(down.attempts) == 4 * len(rows)

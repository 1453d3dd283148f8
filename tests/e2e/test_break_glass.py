"""Break-glass end to end, through the API and a real worker: an emergency request is granted at once with no
approver, the security group and the skipped approvers are told loudly, a review opens, and a confirm closes it,
a condemn revokes the grant and flags it, and silence past the deadline escalates and flags it.

The demo's ``ledger/prod-db/write`` allows break-glass (cap PT1H, notify ``security``: ada and radia). Linus's
normal rule there is "manager then owner": grace (his manager) and frances (the owner) are the skipped approvers.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from access.errors import Refusal, RefusalKind
from access.notifications import NoticeKind
from starter.api.app import create_app
from starter.services import break_glass as break_glass_service
from starter.services import requests as requests_service
from store import notifications as outbox
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, EmergencyStart, Notification
from tests.conftest import Api, FakeTarget, load_into
from tests.support import eventually

ROLE = "ledger/prod-db/write"
REQUESTER, MANAGER, OWNER = "linus@example.com", "grace@example.com", "frances@example.com"
SECURITY = ["ada@example.com", "radia@example.com"]
EMERGENCY = {"role": ROLE, "duration": "PT30M", "justification": "prod is down, INC-42", "emergency": True}
NOTIFICATIONS = {
    "email": {"host": "127.0.0.1", "port": 2525, "sender": "Lapse <lapse@example.com>", "security": "none"},
    "default_channels": ["email"],
}


@pytest.fixture
def told(settings: Settings) -> None:
    """Email configured (nothing sends it here: the outbox rows are what the test reads)."""
    with session_scope(settings.db_url) as session:
        outbox.save_section(session, outbox.NOTIFICATIONS, NOTIFICATIONS, "test", now=datetime.now(UTC))


async def emergency(api: Api, duration: str = "PT30M", *, user: str = REQUESTER) -> Any:
    body = {"role": ROLE, "duration": duration, "justification": "prod is down, INC-42", "emergency": True}
    return await api.ok(user, "POST", "/api/requests", body)


async def review_of(api: Api, request_id: str, *, state: str = "open") -> Any:
    return await eventually(
        lambda: api.ok("ada@example.com", "GET", f"/api/requests/{request_id}/break-glass-review"),
        until=lambda review: review is not None and review["state"] == state,
        what=f"the break-glass review of {request_id} to be {state}",
    )


def notices(settings: Settings, request_id: str, kind: NoticeKind) -> dict[str, Any]:
    """Who was queued a notice of ``kind`` about the request (by email), with the notice."""
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(
            select(Notification).where(Notification.subject == request_id, Notification.kind == kind.value)
        ).all()
        return {row.recipient: row.notice for row in rows if row.recipient}


def audited(settings: Settings, request_id: str) -> list[str]:
    with session_scope(settings.db_url, write=False) as session:
        return list(
            session.exec(
                select(AuditEvent.action)
                .where(AuditEvent.target == f"access-request-{request_id}")
                .order_by(col(AuditEvent.id))
            )
        )


async def test_an_emergency_is_granted_at_once_told_loudly_and_its_review_opens(
    api: Api, settings: Settings, told: None
) -> None:
    created = await emergency(api)
    assert created["rule"] == "break-glass" and created["steps"] == []
    status = await api.wait_for(created["id"], "active")
    assert status["break_glass"]["reviewers"] == [OWNER, MANAGER]
    assert status["break_glass"]["notify"] == SECURITY

    review = await review_of(api, created["id"])
    assert review["reviewers"] == [OWNER, MANAGER] and review["requester"] == REQUESTER
    loud = notices(settings, created["id"], NoticeKind.BREAK_GLASS)
    assert sorted(loud) == sorted([*SECURITY, MANAGER, OWNER])
    assert all(notice["details"]["loud"] for notice in loud.values())
    assert sorted(notices(settings, created["id"], NoticeKind.BREAK_GLASS_REVIEW)) == [OWNER, MANAGER]
    assert "break_glass.opened" in audited(settings, created["id"])
    # The reviewers and the security group may open the request they were told of.
    for person in (MANAGER, "radia@example.com"):
        assert (await api.ok(person, "GET", f"/api/requests/{created['id']}"))["id"] == created["id"]

    # Nobody reviews their own; a stranger may not; a condemn needs a reason.
    path = f"/api/requests/{created['id']}/break-glass-review"
    own = await api.call(REQUESTER, "POST", path, {"verdict": "confirm"})
    assert own.status_code == 403 and "your own" in own.json()["detail"]
    stranger = await api.call("ken@example.com", "POST", path, {"verdict": "confirm"})
    assert stranger.status_code == 403
    bare = await api.call(MANAGER, "POST", path, {"verdict": "condemn"})
    assert bare.status_code == 422 and "comment" in bare.json()["detail"]

    confirmed = await api.ok(MANAGER, "POST", path, {"verdict": "confirm", "comment": "seen in the incident"})
    assert confirmed["state"] == "confirmed" and confirmed["decided_by"] == MANAGER
    assert (await api.status(created["id"]))["state"] == "active"  # a confirmed emergency keeps its grant
    again = await api.call(OWNER, "POST", path, {"verdict": "condemn", "comment": "late"})
    assert again.status_code == 409
    assert "break_glass.confirmed" in audited(settings, created["id"])


async def test_a_condemned_emergency_is_revoked_flagged_and_escalated(api: Api, settings: Settings, told: None) -> None:
    created = await emergency(api)
    await review_of(api, created["id"])
    path = f"/api/requests/{created['id']}/break-glass-review"
    condemned = await api.ok(OWNER, "POST", path, {"verdict": "condemn", "comment": "no incident that day"})
    assert condemned["state"] == "condemned"
    assert condemned["escalated_to"] == sorted([*SECURITY, MANAGER])

    ended = await api.wait_for(created["id"], "revoked")
    assert ended["ended_by"] == OWNER and "no incident" in ended["end_reason"]
    escalated = notices(settings, created["id"], NoticeKind.BREAK_GLASS_REVIEW)
    assert set(escalated) >= {*SECURITY, MANAGER}
    assert escalated[SECURITY[0]]["details"]["flagged"] is True
    actions = audited(settings, created["id"])
    assert actions.index("break_glass.condemned") < actions.index("grant.revoked")

    listed = await api.ok("ada@example.com", "GET", "/api/break-glass")
    assert listed[0]["request_id"] == created["id"] and listed[0]["state"] == "condemned"
    flagged = await api.ok("ada@example.com", "GET", "/api/break-glass", flagged="true")
    assert [r["request_id"] for r in flagged] == [created["id"]]
    assert (await api.call(MANAGER, "GET", "/api/break-glass")).status_code == 403


async def test_an_emergency_nobody_reviews_in_time_is_escalated_and_flagged(
    api: Api, settings: Settings, told: None
) -> None:
    short = {"name": "write", "owners": [OWNER], "break_glass": {"max_duration": "PT1H", "review_within": "PT2S"}}
    resources = [{"name": "prod-db", "roles": [short]}]
    load_into(settings, {"integrations": [{"name": "ledger", "kind": "ledger", "resources": resources}]})

    created = await emergency(api, "PT10M")
    review = await review_of(api, created["id"], state="unreviewed")
    assert review["decided_by"] is None and review["escalated_to"] == sorted([*SECURITY, MANAGER])
    assert "break_glass.unreviewed" in audited(settings, created["id"])
    escalated = notices(settings, created["id"], NoticeKind.BREAK_GLASS_REVIEW)
    assert set(escalated) >= {*SECURITY, MANAGER} and escalated[MANAGER]["details"]["flagged"] is True
    # Unreviewed is flagged, not revoked: the grant keeps its own end.
    assert (await api.status(created["id"]))["state"] == "active"
    late = await api.call(OWNER, "POST", f"/api/requests/{created['id']}/break-glass-review", {"verdict": "confirm"})
    assert late.status_code == 409


async def test_a_role_without_break_glass_refuses_an_emergency_and_the_cap_holds(api: Api) -> None:
    body = {"role": "ledger/prod-db/read", "duration": "PT10M", "justification": "outage", "emergency": True}
    refused = await api.call(REQUESTER, "POST", "/api/requests", body)
    assert refused.status_code == 403
    assert "does not allow emergency (break-glass) access" in refused.json()["detail"]

    too_long = await api.call(REQUESTER, "POST", "/api/requests", {**body, "role": ROLE, "duration": "PT2H"})
    assert too_long.status_code == 422 and "PT1H" in too_long.json()["detail"]
    no_reason = await api.call(REQUESTER, "POST", "/api/requests", {**body, "role": ROLE, "justification": " "})
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    # Refused before anything started: the start's claim is released, and a request put right is taken at once.
    assert (await api.call(REQUESTER, "POST", "/api/requests", {**body, "role": ROLE})).status_code == 201


async def test_a_second_emergency_is_refused_while_one_is_held_and_after_a_condemn(
    api: Api, settings: Settings, target: FakeTarget
) -> None:
    first = await emergency(api)
    await api.wait_for(first["id"], "active")
    second = await api.call(REQUESTER, "POST", "/api/requests", EMERGENCY)
    assert second.status_code == 409, second.text
    assert first["id"] in second.json()["detail"] and second.json()["open_request"] == first["id"]
    # A normal request of the role is not held up by it.
    normal = await api.call(REQUESTER, "POST", "/api/requests", {**EMERGENCY, "emergency": False})
    assert normal.status_code == 201, normal.text

    await review_of(api, first["id"])
    path = f"/api/requests/{first['id']}/break-glass-review"
    await api.ok(OWNER, "POST", path, {"verdict": "condemn", "comment": "no incident"})
    await api.wait_for(first["id"], "revoked")
    assert not any(account == REQUESTER for account, _ in target.held)
    again = await api.call(REQUESTER, "POST", "/api/requests", EMERGENCY)
    assert again.status_code == 409, again.text
    assert "condemned by frances@example.com" in again.json()["detail"]
    assert again.json()["condemned_request"] == first["id"]


@pytest.mark.every_app_db
async def test_emergency_requests_sent_at_once_through_two_apis_start_one(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget
) -> None:
    """A double click, and a third tab sent through a second app on the same app DB (in this process: nothing of
    the claim is held in a process, ``tests/test_emergency_start.py`` races separate processes on the claim itself):
    they reach Lapse together; one is started and the others are refused, naming it."""
    other_app = create_app(settings, client=env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other_app), base_url="http://lapse.test") as http:
        other = Api(http)
        answers = await asyncio.gather(
            api.call(REQUESTER, "POST", "/api/requests", EMERGENCY),
            api.call(REQUESTER, "POST", "/api/requests", EMERGENCY),
            other.call(REQUESTER, "POST", "/api/requests", EMERGENCY),
        )
    assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
    started = next(a.json() for a in answers if a.status_code == 201)
    assert all(a.json()["open_request"] == started["id"] for a in answers if a.status_code == 409)
    await api.wait_for(started["id"], "active")
    assert claims(settings) == []  # released once the workflow recorded it


async def test_an_emergency_being_started_elsewhere_is_refused_until_its_claim_goes_stale(
    api: Api, settings: Settings, target: FakeTarget
) -> None:
    """Another API process is starting linus's emergency request (its claim is in the app DB): his request here is
    refused, naming that one, and nothing is started. A claim left by a process that died in the middle of a start
    is taken over once older than twice the submit timeout."""
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        session.add(EmergencyStart(requester=REQUESTER, role=ROLE, request_id="elsewhere01", started_at=now))
    refused = await api.call(REQUESTER, "POST", "/api/requests", EMERGENCY)
    assert refused.status_code == 409, refused.text
    assert refused.json()["open_request"] == "elsewhere01" and "is being started" in refused.json()["detail"]
    assert await api.ok(REQUESTER, "GET", "/api/requests") == []
    assert claims(settings) == [(REQUESTER, ROLE, "elsewhere01")]

    claimed_at(settings, now - 2 * settings.submit_timeout + timedelta(seconds=10))  # just inside: still held
    assert (await api.call(REQUESTER, "POST", "/api/requests", EMERGENCY)).status_code == 409
    claimed_at(settings, now - 2 * settings.submit_timeout - timedelta(seconds=1))
    created = await emergency(api)
    await api.wait_for(created["id"], "active")
    assert claims(settings) == []


@pytest.mark.parametrize(
    ("outcome", "kept"),
    [
        (Refusal(RefusalKind.UNAVAILABLE, "nothing was started, try again", retry_after=2), False),
        (Refusal(RefusalKind.UNAVAILABLE, "started but not recorded yet", extra={"id": "set below"}), True),
        (asyncio.CancelledError(), True),
    ],
    ids=["nothing-started", "started-not-recorded", "cancelled"],
)
async def test_a_start_whose_outcome_is_unknown_keeps_its_claim(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch, outcome: BaseException, kept: bool
) -> None:
    """The workflow service answers that nothing was started: the claim goes, and the requester may ask again at
    once. It answers that the request was started but not recorded yet, or the call is cancelled mid-start: the
    claim stays (until it goes stale), so that a second request cannot pass the check before the first is
    recorded."""

    async def start_fails(_client: Any, _settings: Settings, request_id: str, _start: Any) -> Any:
        if isinstance(outcome, Refusal) and "id" in outcome.extra:
            outcome.extra["id"] = request_id
        raise outcome

    monkeypatch.setattr(requests_service, "_submit", start_fails)
    with contextlib.suppress(asyncio.CancelledError):
        answer = await api.call(REQUESTER, "POST", "/api/requests", EMERGENCY)
        assert answer.status_code == 503, answer.text
    assert len(claims(settings)) == (1 if kept else 0), claims(settings)


def claimed_at(settings: Settings, when: datetime) -> None:
    """Date the one emergency start claimed back to ``when``."""
    with session_scope(settings.db_url) as session:
        row = session.get(EmergencyStart, (REQUESTER, ROLE))
        assert row is not None
        row.started_at = when
        session.add(row)


def claims(settings: Settings) -> list[tuple[str, str, str]]:
    """The emergency starts claimed in the app DB: requester, role, request."""
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(EmergencyStart)).all()
        return [(row.requester, row.role, row.request_id) for row in rows]


async def test_a_condemn_ends_every_overlapping_emergency_grant_of_the_role(
    api: Api, settings: Settings, target: FakeTarget, told: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await emergency(api)
    await api.wait_for(first["id"], "active")
    # Two overlapping emergency grants, as a race between two requests could still make.
    with monkeypatch.context() as patched:
        patched.setattr(break_glass_service, "_refuse_a_second", lambda *_: None)
        second = await emergency(api, "PT45M")
    await api.wait_for(second["id"], "active")
    await review_of(api, first["id"])

    path = f"/api/requests/{first['id']}/break-glass-review"
    await api.ok(OWNER, "POST", path, {"verdict": "condemn", "comment": "no incident"})
    for request in (first, second):
        ended = await api.wait_for(request["id"], "revoked")
        assert ended["ended_by"] == OWNER and "no incident" in ended["end_reason"]
    assert not any(account == REQUESTER for account, _ in target.held)
    told_of = notices(settings, first["id"], NoticeKind.BREAK_GLASS_REVIEW)[SECURITY[0]]
    assert second["id"] in told_of["text"] and told_of["details"]["revoking"] == [first["id"], second["id"]]
    with session_scope(settings.db_url, write=False) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "break_glass.condemned")).one()
    assert event.details["revoking"] == [first["id"], second["id"]] and event.details["not_revoked"] == []


async def test_a_condemn_of_an_ended_grant_says_nothing_was_revoked(api: Api, settings: Settings, told: None) -> None:
    created = await emergency(api)
    await review_of(api, created["id"])
    await api.ok(REQUESTER, "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"})
    await api.wait_for(created["id"], "revoked")
    path = f"/api/requests/{created['id']}/break-glass-review"
    await api.ok(OWNER, "POST", path, {"verdict": "condemn", "comment": "no incident"})
    told_of = notices(settings, created["id"], NoticeKind.BREAK_GLASS_REVIEW)[SECURITY[0]]
    assert "nothing to revoke" in told_of["text"] and told_of["details"]["revoking"] == []

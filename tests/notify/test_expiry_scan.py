"""The expiring-soon warning, given by the scan of the grants ledger (``store.expiry_warnings``) for grants made by
the real request workflow: when it comes, to whom, once per end, again after an extension, never for a grant
under ten minutes or one being revoked, and once when two workers scan at the same moment. The scan is run with
the clock it is given, so hours are not waited for."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from access.requests import RecordInput, RequestStatus
from access.types import AuditEntry
from activities.notify.expiry import warn_expiring
from activities.requests import RequestActivities
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Grant, Notification
from tests.conftest import Api
from tests.notify_fixtures import configure_notifications

pytestmark = pytest.mark.every_app_db  # the mark is a conditional update: two scans race per backend

DEPLOY = "ledger/payments-api/deploy"
ALAN, LINUS = "alan@example.com", "linus@example.com"
EMAIL: dict[str, Any] = {
    "email": {"host": "localhost", "port": 2525, "sender": "lapse@example.com", "security": "none"},
    "webhooks": [{"name": "siem", "url": "https://siem.example.com/lapse", "secret_env": "LAPSE_SIEM_SECRET"}],
}


async def granted(api: Api, duration: str = "PT1H") -> tuple[str, datetime]:
    """Alan's deploy role, approved by Linus: the request's id and the grant's end."""
    created = await api.request(ALAN, DEPLOY, duration)
    await api.ok(LINUS, "POST", f"/api/requests/{created['id']}/approve", {})
    active = await api.wait_for(created["id"], "active")
    return created["id"], datetime.fromisoformat(active["expires_at"])


def warnings(settings: Settings, request_id: str) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(
            AuditEvent.action == "grant.expiring_soon", AuditEvent.target == f"access-request-{request_id}"
        )
        return list(session.exec(query.order_by(col(AuditEvent.id))))


def queued(settings: Settings, request_id: str) -> list[tuple[str | None, str]]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(Notification.recipient, Notification.channel).where(
            Notification.subject == request_id, Notification.kind == "expiring_soon"
        )
        return sorted(session.exec(query), key=str)


async def scan(settings: Settings, now: datetime) -> int:
    return await asyncio.to_thread(warn_expiring, settings.db_url, now=now)


async def test_the_holder_is_warned_once_a_tenth_of_an_hour_grant_before_its_end(api: Api, settings: Settings) -> None:
    configure_notifications(settings, EMAIL)
    request_id, end = await granted(api, "PT1H")
    lead = timedelta(minutes=6)  # 10% of an hour, shorter than 15 minutes

    assert await scan(settings, end - lead - timedelta(seconds=5)) == 0
    assert warnings(settings, request_id) == []
    assert await scan(settings, end - lead + timedelta(seconds=1)) == 1
    [warning] = warnings(settings, request_id)
    assert (warning.actor, warning.details["expires_at"], warning.details["lead"]) == ("lapse", end.isoformat(), "PT6M")
    assert queued(settings, request_id) == [(ALAN, "email"), (None, "webhook")]
    shown = await api.ok(ALAN, "GET", f"/api/requests/{request_id}")
    assert datetime.fromisoformat(shown["warned_for"]) == end  # the request says which end was warned of

    assert await scan(settings, end - timedelta(minutes=2)) == 0  # once per end
    assert len(warnings(settings, request_id)) == 1 and len(queued(settings, request_id)) == 2
    assert await scan(settings, end + timedelta(seconds=1)) == 0  # nor after the end


async def test_the_organisations_lead_time_replaces_the_default(api: Api, settings: Settings) -> None:
    configure_notifications(settings, {**EMAIL, "expiry_warning": "PT20M"})
    request_id, end = await granted(api, "PT1H")
    assert await scan(settings, end - timedelta(minutes=21)) == 0
    assert await scan(settings, end - timedelta(minutes=19, seconds=59)) == 1
    assert warnings(settings, request_id)[0].details["lead"] == "PT20M"


async def test_without_notifications_configured_the_warning_is_still_audited(api: Api, settings: Settings) -> None:
    configure_notifications(settings, None)
    request_id, end = await granted(api, "PT1H")
    assert await scan(settings, end - timedelta(minutes=5)) == 1
    assert len(warnings(settings, request_id)) == 1 and queued(settings, request_id) == []


async def test_an_extension_after_the_warning_warns_again_before_the_new_end(api: Api, settings: Settings) -> None:
    configure_notifications(settings, EMAIL)
    request_id, end = await granted(api, "PT1H")
    assert await scan(settings, end - timedelta(minutes=5)) == 1

    url = f"/api/requests/{request_id}"
    await api.ok(ALAN, "POST", f"{url}/extend", {"duration": "PT30M", "justification": "overrun"})
    await api.ok(LINUS, "POST", f"{url}/approve", {})
    status = await api.wait_for(request_id, "active")
    new_end = datetime.fromisoformat((await api.ok(ALAN, "GET", url))["expires_at"])
    assert new_end == end + timedelta(minutes=30), status

    assert await scan(settings, end - timedelta(minutes=5)) == 0  # the old end's warning was given
    assert await scan(settings, new_end - timedelta(minutes=9, seconds=5)) == 0  # 10% of 1 h 30 min: 9 minutes
    assert await scan(settings, new_end - timedelta(minutes=8, seconds=59)) == 1
    first, second = warnings(settings, request_id)
    assert (first.details["expires_at"], second.details["expires_at"]) == (end.isoformat(), new_end.isoformat())
    assert queued(settings, request_id).count((ALAN, "email")) == 2


async def test_a_grant_under_ten_minutes_is_never_warned(api: Api, settings: Settings) -> None:
    request_id, end = await granted(api, "PT9M")
    for before in (timedelta(minutes=5), timedelta(minutes=1), timedelta(seconds=1)):
        assert await scan(settings, end - before) == 0
    assert warnings(settings, request_id) == []


async def test_a_grant_ended_or_being_revoked_is_not_warned(api: Api, settings: Settings) -> None:
    ended, ended_end = await granted(api, "PT1H")
    await api.ok(ALAN, "POST", f"/api/requests/{ended}/revoke", {})
    await api.wait_for(ended, "revoked")
    assert await scan(settings, ended_end - timedelta(minutes=1)) == 0

    revoking, end = await granted(api, "PT1H")
    with session_scope(settings.db_url) as session:  # as while its revoke is under way in the target
        grant = session.exec(select(Grant).where(Grant.request_id == revoking)).one()
        grant.phase = "revoking"
        session.add(grant)
    assert await scan(settings, end - timedelta(minutes=1)) == 0
    assert warnings(settings, ended) == [] and warnings(settings, revoking) == []


async def test_two_workers_scanning_at_once_warn_each_grant_once(api: Api, settings: Settings) -> None:
    configure_notifications(settings, EMAIL)
    made = [await granted(api, "PT1H") for _ in range(3)]
    at = max(end for _, end in made) - timedelta(minutes=5)
    counts = await asyncio.gather(*(scan(settings, at) for _ in range(4)))
    assert sum(counts) == 3
    for request_id, _ in made:
        assert len(warnings(settings, request_id)) == 1
        assert queued(settings, request_id) == [(ALAN, "email"), (None, "webhook")]


async def test_a_run_from_before_the_scan_that_warns_after_it_does_not_warn_twice(api: Api, settings: Settings) -> None:
    """Across the upgrade a run that timed its own warning may still give one: whichever of it and the scan
    records the warning of an end first, the holder is told once."""
    configure_notifications(settings, EMAIL)
    request_id, end = await granted(api, "PT1H")
    status = RequestStatus.model_validate(await api.status(request_id))
    old_runs_step = RecordInput(
        status=status.model_copy(update={"warned_for": end}),
        events=[
            AuditEntry(
                actor="lapse",
                action="grant.expiring_soon",
                target=f"access-request-{request_id}",
                details={"expires_at": end.isoformat(), "lead": "PT6M"},
            )
        ],
        seq=1000,
    )
    assert await scan(settings, end - timedelta(minutes=5)) == 1  # the scan first
    await asyncio.to_thread(RequestActivities(settings.db_url).record_request, old_runs_step)
    assert len(warnings(settings, request_id)) == 1 and queued(settings, request_id) == [
        (ALAN, "email"),
        (None, "webhook"),
    ]

    other, other_end = await granted(api, "PT1H")
    other_status = RequestStatus.model_validate(await api.status(other))
    other_step = old_runs_step.model_copy(
        update={
            "status": other_status.model_copy(update={"warned_for": other_end}),
            "events": [
                e.model_copy(
                    update={"target": f"access-request-{other}", "details": {"expires_at": other_end.isoformat()}}
                )
                for e in old_runs_step.events
            ],
        }
    )
    await asyncio.to_thread(RequestActivities(settings.db_url).record_request, other_step)  # the old run first
    assert await scan(settings, other_end - timedelta(minutes=5)) == 0
    assert len(warnings(settings, other)) == 1 and len(queued(settings, other)) == 2

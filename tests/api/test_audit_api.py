"""/api/audit: admins read the log, filtered, and find out when someone edited or removed any of it."""

from __future__ import annotations

from sqlalchemy import text

from store.db import session_scope
from store.settings import Settings
from tests.api.answers import problem
from tests.conftest import Api

ADMIN = "ada@example.com"
DEPLOY = "ledger/payments-api/deploy"


async def test_the_log_is_for_admins(api: Api) -> None:
    assert problem(await api.call("alan@example.com", "GET", "/api/audit"), 403) == "only admins can do this"
    problem(await api.call("alan@example.com", "GET", "/api/audit/verify"), 403)


async def test_events_are_listed_newest_first_and_filtered(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    target = f"access-request-{created['id']}"
    events = await api.ok(ADMIN, "GET", "/api/audit", target=target)
    assert events and all(e["target"] == target for e in events)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    # Emails are kept in lower case: a filter written with capitals finds the same events.
    by_alan = await api.ok(ADMIN, "GET", "/api/audit", actor="Alan@Example.com")
    assert by_alan and {e["actor"] for e in by_alan} == {"alan@example.com"}
    assert len(await api.ok(ADMIN, "GET", "/api/audit", limit=1)) == 1
    assert await api.ok(ADMIN, "GET", "/api/audit", action="no.such.action") == []
    problem(await api.call(ADMIN, "GET", "/api/audit", limit=0), 422, "limit")


async def test_audit_log_detects_an_edited_event(api: Api, settings: Settings) -> None:
    await api.request("alan@example.com", DEPLOY)
    check = await api.ok(ADMIN, "GET", "/api/audit/verify")
    assert check["intact"] is True and check["events"] >= 2

    with session_scope(settings.db_url) as session:
        session.execute(text("update auditevent set reason = 'nothing to see' where id = 1"))
    check = await api.ok(ADMIN, "GET", "/api/audit/verify")
    assert check["intact"] is False and check["first_altered"] == 1
    assert [(p["kind"], p["seq"]) for p in check["problems"]] == [("altered", 1)]


async def test_audit_log_detects_a_deleted_event(api: Api, settings: Settings) -> None:
    await api.request("alan@example.com", DEPLOY)
    with session_scope(settings.db_url) as session:
        session.execute(text("delete from auditevent where id = 1"))
    check = await api.ok(ADMIN, "GET", "/api/audit/verify")
    assert check["intact"] is False

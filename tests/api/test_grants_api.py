"""/api/grants: what each person holds and until when; admins see everyone's and end grants here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from access import names
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant
from tests.api.answers import problem
from tests.conftest import Api, FakeTarget

ADMIN = "ada@example.com"
DEPLOY = "ledger/payments-api/deploy"
READ = "ledger/prod-db/read"


def _add(settings: Settings, **fields: object) -> int:
    """A ledger row as discovery or a request would leave it; returns its id."""
    with session_scope(settings.db_url) as session:
        grant = Grant(granted_at=datetime.now(UTC), **fields)  # type: ignore[arg-type]
        session.add(grant)
        session.flush()
        assert grant.id is not None
        return grant.id


async def test_everyones_grants_are_for_admins(api: Api) -> None:
    problem(await api.call("alan@example.com", "GET", "/api/grants", all="true"), 403)
    assert await api.ok(ADMIN, "GET", "/api/grants", all="true") == []


async def test_each_person_sees_only_their_own_grants(api: Api, settings: Settings) -> None:
    _add(settings, account="alan", role=DEPLOY, user_email="alan@example.com")
    _add(settings, account="ken", role=DEPLOY, user_email="ken@example.com")
    assert [(g["role"], g["user"]) for g in await api.ok("alan@example.com", "GET", "/api/grants")] == [
        (DEPLOY, "alan@example.com")
    ]
    assert await api.ok("grace@example.com", "GET", "/api/grants") == []


async def test_grants_are_listed_soonest_expiry_first_and_standing_access_last(api: Api, settings: Settings) -> None:
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        for role, expires_at in [(DEPLOY, None), (READ, now + timedelta(hours=2))]:
            session.add(
                Grant(account="alan", role=role, user_email="alan@example.com", granted_at=now, expires_at=expires_at)
            )
        session.add(
            Grant(account="alan", role="ledger/prod-db/write", granted_at=now, expires_at=now + timedelta(hours=1))
        )
    grants = await api.ok(ADMIN, "GET", "/api/grants", all="true")
    assert [(g["role"], g["user"]) for g in grants] == [
        ("ledger/prod-db/write", None),  # found in the target with no matching user
        (READ, "alan@example.com"),
        (DEPLOY, "alan@example.com"),  # never expires
    ]
    assert datetime.fromisoformat(grants[0]["expires_at"]) == now + timedelta(hours=1)


async def test_an_admin_revokes_an_external_grant_in_its_target(
    api: Api, settings: Settings, target: FakeTarget
) -> None:
    target.held.add(("alan@example.com", DEPLOY))
    grant_id = _add(settings, account="alan@example.com", role=DEPLOY, user_email="alan@example.com", path="external")

    revoked = await api.ok(ADMIN, "POST", f"/api/grants/{grant_id}/revoke", {"comment": "made by hand"})
    assert revoked["grant"]["id"] == grant_id and revoked["grant"]["path"] == "external"
    assert revoked["still_held"] is False and revoked["returns_on_sync"] is False and revoked["request"] is None
    assert ("revoke", "alan@example.com", DEPLOY) in target.calls
    assert await api.ok("alan@example.com", "GET", "/api/grants") == []

    again = problem(await api.call(ADMIN, "POST", f"/api/grants/{grant_id}/revoke", {}), 409, "grant_id")
    assert again.startswith(f"grant {grant_id} already ended at")


async def test_revoking_a_grant_that_does_not_exist_names_the_id(api: Api) -> None:
    detail = problem(await api.call(ADMIN, "POST", "/api/grants/999999/revoke", {}), 404, "grant_id")
    assert detail == "there is no grant 999999"


async def test_a_requester_gives_back_a_grant_and_it_is_gone_from_their_list(api: Api, target: FakeTarget) -> None:
    created = await api.request("katherine@example.com", READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    assert [g["role"] for g in await api.ok("katherine@example.com", "GET", "/api/grants")] == [READ]

    problem(await api.call("alan@example.com", "POST", f"/api/requests/{created['id']}/revoke", {}), 403)
    ended = await api.ok("katherine@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert ended["state"] in ("revoking", "revoked")
    await api.wait_for(created["id"], "revoked")
    assert await api.ok("katherine@example.com", "GET", "/api/grants") == []


async def test_only_its_requester_or_an_admin_ends_a_grant_whose_run_is_gone(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    """With no run to ask, the service itself checks who is revoking (the ledger row is revoked directly)."""
    katherine = "katherine@example.com"
    created = await api.request(katherine, READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    workflow_id = names.request_workflow_id(created["id"])
    # What Temporal does to a run whose history passed its limit.
    await env.client.get_workflow_handle(workflow_id).terminate("history size exceeds limit")

    stranger = await api.call("ken@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert problem(stranger, 403) == "only the requester or an admin can revoke a grant"
    [refused] = [e for e in audit(workflow_id) if e.action == "grant.revoke.refused"]
    assert (refused.actor, refused.reason) == ("ken@example.com", "only the requester or an admin can revoke a grant")
    with session_scope(settings.db_url, write=False) as session:
        assert session.exec(select(Grant).where(Grant.request_id == created["id"])).one().active
    assert (katherine, READ) in target.held

    revoked = await api.ok(katherine, "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"})
    assert (revoked["state"], revoked["ended_by"]) == ("revoked", katherine)
    assert (katherine, READ) not in target.held
    [ended] = [e for e in audit(workflow_id) if e.action == "grant.revoked"]
    assert ended.actor == katherine

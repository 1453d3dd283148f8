"""The birthright sync through the API, its schedule and the real workflow: a real LDAP group, and the
ledger integration backed by the test's target double (which counts every grant and revoke)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlmodel import col, delete, select
from temporalio.client import ScheduleIntervalSpec
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from access import names
from access.connectors import PermanentError, Target
from access.syncs import BirthrightBatchInput, SyncInput
from activities.birthright import BirthrightActivities
from activities.connectors import BUILT_IN
from harness.ldap import LdapServer
from starter.services.syncs import ensure_sync_schedules
from store.db import session_scope
from store.settings import Settings
from store.tables import BirthrightItem, Grant, Group, Membership, User
from tests.conftest import Api, FakeTarget, clear_sync_schedules

ADMIN = "ada@example.com"
KATHERINE = "katherine@example.com"
READ = "ledger/payments-api/read"
ENGINEERS = [
    "alan@example.com",
    "barbara@example.com",
    "dennis@example.com",
    "frances@example.com",
    "grace@example.com",
    "ken@example.com",
    "linus@example.com",
    "margaret@example.com",
]


@pytest_asyncio.fixture
async def schedules(env: WorkflowEnvironment, settings: Settings, api: Api) -> AsyncIterator[None]:
    """The sync schedules pointed at this test's task queue (the schedule ids are global on the server)."""
    await clear_sync_schedules(env.client)
    await ensure_sync_schedules(env.client, settings)
    yield


async def wait_for_sync(api: Api, since: datetime) -> dict[str, Any]:
    """The birthright sync's state once a run that started after ``since`` finished without an error."""
    state = await api.sync_run("birthright", since)
    assert state["error"] is None, state
    return state


async def sync_now(api: Api) -> dict[str, Any]:
    since = datetime.now(UTC)
    await api.ok(ADMIN, "POST", "/api/birthright/sync")
    return await wait_for_sync(api, since)


async def create_policy(api: Api, name: str, groups: list[str], roles: list[str]) -> dict[str, Any]:
    since = datetime.now(UTC)
    body = {"name": name, "groups": groups, "roles": roles}
    response = await api.call(ADMIN, "POST", "/api/birthright/policies", body)
    assert response.status_code == 201, response.text
    return await wait_for_sync(api, since)


async def delete_policy(api: Api, name: str) -> dict[str, Any]:
    since = datetime.now(UTC)
    response = await api.call(ADMIN, "DELETE", f"/api/birthright/policies/{name}")
    assert response.status_code == 204, response.text
    return await wait_for_sync(api, since)


def set_membership(settings: Settings, email: str, group: str, member: bool) -> None:
    """What a directory sync would write (that sync is not under test here)."""
    with session_scope(settings.db_url) as session:
        user = session.exec(select(User).where(User.email == email)).one()
        group_id = session.exec(select(Group.id).where(Group.name == group)).one()
        session.exec(delete(Membership).where(col(Membership.user_id) == user.id, col(Membership.group_id) == group_id))
        if member:
            session.add(Membership(user_id=user.id, group_id=group_id))  # type: ignore[arg-type]


def birthright_grants(settings: Settings, role: str) -> dict[str, str | None]:
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(
            select(Grant).where(Grant.role == role, Grant.path == "birthright", col(Grant.active).is_(True))
        )
        return {g.user_email or "": g.policy for g in rows}


async def test_schedule_exists_daily_and_a_new_policy_syncs_at_once(
    api: Api, env: WorkflowEnvironment, schedules: None, target: FakeTarget, settings: Settings, audit: Any
) -> None:
    described = await env.client.get_schedule_handle(names.BIRTHRIGHT_SYNC).describe()
    assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=settings.birthright_sync_every)]

    state = await create_policy(api, "engineering-read", ["engineering"], [READ])
    assert state["summary"]["added"] == len(ENGINEERS)
    assert sorted(a for kind, a, role in target.calls if kind == "grant" and role == READ) == ENGINEERS
    assert birthright_grants(settings, READ) == dict.fromkeys(ENGINEERS, "engineering-read")

    granted = [e for e in audit(READ) if e.action == "birthright.granted"]
    assert len(granted) == len(ENGINEERS)
    assert all("engineering-read" in e.reason and e.details["policy"] == "engineering-read" for e in granted)

    mine = await api.ok("alan@example.com", "GET", "/api/grants")
    assert [(g["role"], g["path"], g["policy"], g["returns_on_sync"], g["expires_at"]) for g in mine] == [
        (READ, "birthright", "engineering-read", True, None)
    ]

    # Nothing changed: the next run plans nothing and calls nothing.
    calls = len(target.calls)
    state = await sync_now(api)
    assert state["summary"]["planned"]["add"] == 0 and len(target.calls) == calls


async def test_jit_and_birthright_overlap_and_neither_removes_the_other(
    api: Api, schedules: None, target: FakeTarget, settings: Settings
) -> None:
    jit = await api.request("alan@example.com", READ, "PT30M", "")
    await api.wait_for(jit["id"], "active")
    assert target.calls.count(("grant", "alan@example.com", READ)) == 1

    await create_policy(api, "engineering-read", ["engineering"], [READ])
    # Granted again (idempotent) although the JIT grant covers it: that access may have been removed by hand.
    assert target.calls.count(("grant", "alan@example.com", READ)) == 2

    await delete_policy(api, "engineering-read")
    revoked = sorted(a for kind, a, role in target.calls if kind == "revoke")
    assert revoked == [e for e in ENGINEERS if e != "alan@example.com"]
    assert ("alan@example.com", READ) in target.held
    assert birthright_grants(settings, READ) == {}
    status = await api.status(jit["id"])
    assert status["state"] == "active"  # the JIT grant was never touched

    await api.ok("alan@example.com", "POST", f"/api/requests/{jit['id']}/revoke", {})
    await api.wait_for(jit["id"], "revoked")
    assert ("alan@example.com", READ) not in target.held


async def test_leavers_and_those_who_leave_the_group_lose_it_on_the_next_sync(
    api: Api, schedules: None, target: FakeTarget, settings: Settings, audit: Any
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    set_membership(settings, "ken@example.com", "engineering", False)
    with session_scope(settings.db_url) as session:
        dennis = session.exec(select(User).where(User.email == "dennis@example.com")).one()
        dennis.active = False
    state = await sync_now(api)
    assert state["summary"]["removed"] == 2
    assert ("ken@example.com", READ) not in target.held and ("dennis@example.com", READ) not in target.held
    reasons = {e.details["user"]: e.reason for e in audit(READ) if e.action == "birthright.revoked"}
    assert "no longer active" in reasons["dennis@example.com"]
    assert "engineering-read" in reasons["ken@example.com"]


async def test_preview_shows_the_blast_radius_and_saves_nothing(
    api: Api, schedules: None, target: FakeTarget, settings: Settings, audit: Any
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    events = len(audit())
    change = {"action": "update", "name": "engineering-read", "changes": {"groups": ["platform"]}}
    preview = await api.ok(ADMIN, "POST", "/api/birthright/preview", change)
    platform = {"alan@example.com", "barbara@example.com", "linus@example.com"}
    assert {i["user"] for i in preview["losses"]} == set(ENGINEERS) - platform
    assert preview["gains"] == [] and preview["counts"]["remove"] == 5
    assert preview["counts"]["by_policy"]["engineering-read"] == {"remove": 5}

    deleted = await api.ok(ADMIN, "POST", "/api/birthright/preview", {"action": "delete", "name": "engineering-read"})
    assert deleted["counts"]["remove"] == len(ENGINEERS)

    policy = await api.ok(ADMIN, "GET", "/api/birthright/policies/engineering-read")
    assert policy["groups"] == ["engineering"] and policy["grants"] == len(ENGINEERS)
    assert len(audit()) == events and len(birthright_grants(settings, READ)) == len(ENGINEERS)


# --- a killed worker, failures: the activities alone -------------------------------------


class CrashingTarget(FakeTarget):
    """Dies (not a connector error: the worker is gone) after ``crash_after`` grants."""

    crash_after: int | None = None
    refuse: str | None = None

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        if account == self.refuse:
            raise PermanentError(f"{account} has no account in the target")
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise SystemExit("worker killed")
        super().grant(account, target, expires_at)


def _plan_and_items(settings: Settings, activities: BirthrightActivities) -> str:
    with session_scope(settings.db_url) as session:
        from store.tables import BirthrightPolicy

        session.add(BirthrightPolicy(name="eng", position=0, groups=["engineering"], roles=[READ]))
    return ActivityEnvironment().run(activities.plan_birthright_sync, SyncInput()).run


def test_a_worker_killed_mid_apply_never_grants_twice(settings: Settings) -> None:
    target = CrashingTarget()
    activities = BirthrightActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})
    run = _plan_and_items(settings, activities)

    target.crash_after = 3
    with pytest.raises(SystemExit):
        ActivityEnvironment().run(
            activities.apply_birthright_batch, BirthrightBatchInput(run=run, after_seq=0, limit=500)
        )
    assert len(target.calls) == 3

    target.crash_after = None
    for _ in range(2):  # the retry, then the same batch once more
        result = ActivityEnvironment().run(
            activities.apply_birthright_batch, BirthrightBatchInput(run=run, after_seq=0, limit=500)
        )
        assert result.last_seq == len(ENGINEERS) and not result.more
    assert sorted(a for _, a, _ in target.calls) == ENGINEERS  # each granted exactly once
    assert len(birthright_grants(settings, READ)) == len(ENGINEERS)


def test_a_permanent_refusal_fails_that_item_and_the_rest_carry_on(settings: Settings, audit: Any) -> None:
    target = CrashingTarget()
    target.refuse = "grace@example.com"
    activities = BirthrightActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})
    run = _plan_and_items(settings, activities)
    result = ActivityEnvironment().run(
        activities.apply_birthright_batch, BirthrightBatchInput(run=run, after_seq=0, limit=500)
    )
    assert (result.applied, result.failed) == (len(ENGINEERS) - 1, 1)
    assert "grace@example.com" not in birthright_grants(settings, READ)
    with session_scope(settings.db_url, write=False) as session:
        failed = session.exec(select(BirthrightItem).where(col(BirthrightItem.error).is_not(None))).one()
    assert failed.user_email == "grace@example.com" and "no account" in (failed.error or "")
    (event,) = [e for e in audit(READ) if e.action == "birthright.failed"]
    assert "'eng'" in event.reason and "next sync" in event.reason


# --- a real LDAP group ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def ldap_role(
    api: Api,
    settings: Settings,
    env: WorkflowEnvironment,
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, str, Any]]:
    """An LDAP integration made through the API and discovered; returns (name, role path, members reader)."""
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    katherine = ldap_server.add_user(f"katherine-{suffix}", base=people, email=KATHERINE, name="Katherine")
    grace = ldap_server.add_user(f"grace-{suffix}", base=people, email="grace@example.com", name="Grace")
    group = ldap_server.add_group("billing-readers", [grace], base=groups)
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", ldap_server.admin_password)
    name = f"ldap-{suffix}"
    config = {
        "url": ldap_server.url,
        "bind_dn": ldap_server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "insecure": True,  # the test's slapd is plain ldap:// on loopback
        "users_base": people,
        "groups_base": groups,
    }
    response = await api.call(ADMIN, "POST", "/api/integrations", {"name": name, "kind": "ldap", "config": config})
    assert response.status_code == 201, response.text
    await api.ok(ADMIN, "POST", f"/api/integrations/{name}/discover")
    role = f"{name}/groups/billing-readers"

    def members() -> set[str]:
        return ldap_server.members(group)

    yield name, role, (members, katherine.lower(), group)
    with contextlib.suppress(RPCError):
        await env.client.get_schedule_handle(names.discovery_id(name)).delete()


async def test_ldap_group_follows_the_policy_the_directory_and_hand_revokes(
    api: Api,
    schedules: None,
    settings: Settings,
    ldap_role: tuple[str, str, Any],
    ldap_server: LdapServer,
    audit: Any,
) -> None:
    import ldap3  # type: ignore[import-untyped]

    name, role, (members, katherine, group) = ldap_role
    assert katherine not in members()

    await create_policy(api, "finance-billing", ["finance"], [role])
    assert katherine in members()
    assert birthright_grants(settings, role) == {KATHERINE: "finance-billing"}

    # Katherine leaves finance in the directory: the next sync takes the group away.
    set_membership(settings, KATHERINE, "finance", False)
    await sync_now(api)
    assert katherine not in members()
    (revoked,) = [e for e in audit(role) if e.action == "birthright.revoked"]
    assert "finance-billing" in revoked.reason

    # Back in finance, then removed from the LDAP group by hand: discovery ends the grant, the sync restores it.
    set_membership(settings, KATHERINE, "finance", True)
    await sync_now(api)
    assert katherine in members()
    with ldap_server.admin() as connection:
        connection.modify(group, {"member": [(ldap3.MODIFY_DELETE, [katherine])]})
    assert katherine not in members()
    since = datetime.now(UTC)
    discovered = await api.ok(ADMIN, "POST", f"/api/integrations/{name}/discover")
    assert discovered["birthright_ended"] == 1
    missing = [e for e in audit(role) if e.action == "grant.missing_in_target"]
    assert missing and "grants it again" in missing[-1].reason
    await wait_for_sync(api, since)  # discovery started it: no need to wait for the daily run
    assert katherine in members()

    # Grace was in the group before Lapse (external): deleting the policy takes only Katherine's access.
    grace = next(m for m in members() if m.startswith("uid=grace"))
    await delete_policy(api, "finance-billing")
    assert members() == {grace}
    assert birthright_grants(settings, role) == {}


def test_a_policy_deleted_while_its_sync_runs_grants_nothing_more(settings: Settings, audit: Any) -> None:
    target = CrashingTarget()
    activities = BirthrightActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})
    run = _plan_and_items(settings, activities)
    with session_scope(settings.db_url) as session:
        from store.tables import BirthrightPolicy

        session.delete(session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == "eng")).one())
    ActivityEnvironment().run(activities.apply_birthright_batch, BirthrightBatchInput(run=run, after_seq=0, limit=500))
    assert target.calls == [] and birthright_grants(settings, READ) == {}
    assert not [e for e in audit(READ) if e.action == "birthright.granted"]


def test_birthright_grants_in_the_target_even_when_another_grant_covers_the_account(settings: Settings) -> None:
    """The other grant's access may have been removed by hand: granting again is idempotent and restores it."""
    from store.tables import Grant

    target = CrashingTarget()
    activities = BirthrightActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})
    with session_scope(settings.db_url) as session:
        session.add(
            Grant(
                account="alan@example.com",
                role=READ,
                user_email="alan@example.com",
                path="jit",
                request_id="jit-alan",
                granted_at=datetime.now(UTC),
            )
        )
    run = _plan_and_items(settings, activities)
    ActivityEnvironment().run(activities.apply_birthright_batch, BirthrightBatchInput(run=run, after_seq=0, limit=500))
    assert ("grant", "alan@example.com", READ) in target.calls
    assert birthright_grants(settings, READ)["alan@example.com"] == "eng"


# --- an admin revokes from the permissions table ----------------------------------------------


def _grant_id(settings: Settings, user: str, role: str, path: str) -> int:
    from store.tables import Grant

    with session_scope(settings.db_url, write=False) as session:
        grant = session.exec(
            select(Grant).where(
                Grant.user_email == user, Grant.role == role, Grant.path == path, col(Grant.active).is_(True)
            )
        ).one()
        assert grant.id is not None
        return grant.id


async def test_an_admin_revoking_a_birthright_grant_is_temporary(
    api: Api, schedules: None, target: FakeTarget, settings: Settings, audit: Any
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    grant_id = _grant_id(settings, "alan@example.com", READ, "birthright")

    response = await api.call("alan@example.com", "POST", f"/api/grants/{grant_id}/revoke", {})
    assert response.status_code == 403
    revoked = await api.ok(ADMIN, "POST", f"/api/grants/{grant_id}/revoke", {"comment": "audit finding"})
    assert revoked["returns_on_sync"] is True and revoked["still_held"] is False
    assert ("revoke", "alan@example.com", READ) in target.calls
    assert "alan@example.com" not in birthright_grants(settings, READ)
    (event,) = [e for e in audit(READ) if e.action == "grant.revoked"]
    assert event.actor == ADMIN and "audit finding" in event.reason and "grants it again" in event.reason
    again = await api.call(ADMIN, "POST", f"/api/grants/{grant_id}/revoke", {})
    assert again.status_code == 409
    assert (await api.call(ADMIN, "POST", "/api/grants/999999/revoke", {})).status_code == 404

    await sync_now(api)  # the seed's behaviour: the policy still applies, so the grant returns
    assert birthright_grants(settings, READ)["alan@example.com"] == "engineering-read"
    assert target.calls.count(("grant", "alan@example.com", READ)) == 2


async def test_an_admin_revoking_a_jit_grant_ends_its_request(api: Api, settings: Settings) -> None:
    created = await api.request("katherine@example.com", "ledger/prod-db/read", "PT30M", "")
    await api.wait_for(created["id"], "active")
    grant_id = _grant_id(settings, "katherine@example.com", "ledger/prod-db/read", "jit")
    revoked = await api.ok(ADMIN, "POST", f"/api/grants/{grant_id}/revoke", {"comment": "not needed"})
    assert revoked["request"]["state"] == "revoked" and revoked["request"]["ended_by"] == ADMIN

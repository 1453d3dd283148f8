"""Access review campaigns end to end on the real dev server: revokes in a real PostgreSQL cluster and through a
JIT request's own workflow, a birthright revoke that becomes a policy exception the next sync honours, and a
recurring definition's schedule. Reviewers' decisions are written as the review-items service records them
(submitted: state ``decided``), then the campaign's workflow is told, as that service tells it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlmodel import col, select
from temporalio.client import ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from access import names
from access.reviews import ReviewDefinition
from harness.postgres import PostgresServer
from starter.services import review_runs
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, BirthrightException, Grant, ReviewCampaign, ReviewDefinitionRow, ReviewItem
from tests.conftest import Api, FakeTarget, load_into
from tests.support import eventually
from tests.workflows.test_birthright_sync import ADMIN, READ, birthright_grants, create_policy, schedules, sync_now

__all__ = ["schedules"]  # the birthright tests' fixture: the sync schedules on this test's queue

PG_ROLE = "pg/postgres/review_read"


def define(settings: Settings, **fields: Any) -> ReviewDefinition:
    definition = ReviewDefinition.model_validate(
        {"reviewers": [{"kind": "manager"}], "fallback": [{"kind": "user", "name": ADMIN}], **fields}
    )
    with session_scope(settings.db_url) as session:
        session.add(
            ReviewDefinitionRow(
                name=definition.name,
                body=definition.model_dump(mode="json"),
                updated_by=ADMIN,
                updated_at=datetime.now(UTC),
            )
        )
    return definition


def items(settings: Settings, campaign_id: str) -> dict[tuple[str, str], ReviewItem]:
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(ReviewItem).where(ReviewItem.campaign_id == campaign_id))
        return {(item.user_email or item.account, item.role): item for item in rows}


def decide(settings: Settings, item: ReviewItem, decision: str, *, by: str, comment: str = "") -> None:
    """What the review-items service records when a reviewer submits a decision."""
    with session_scope(settings.db_url) as session:
        row = session.get(ReviewItem, item.id)
        assert row is not None and row.acted_at is None
        row.state, row.decision, row.comment = "decided", decision, comment
        row.decided_by, row.decided_at = by, datetime.now(UTC)
        session.add(row)


async def settled(settings: Settings, campaign_id: str) -> dict[tuple[str, str], ReviewItem]:
    return await eventually(
        lambda: items(settings, campaign_id),
        until=lambda found: all(item.outcome is not None for item in found.values()),
        what=f"every item of {campaign_id} to be carried out",
        within=60,
    )


def campaign(settings: Settings, campaign_id: str) -> ReviewCampaign | None:
    with session_scope(settings.db_url, write=False) as session:
        return session.get(ReviewCampaign, campaign_id)


def members_of(postgres: PostgresServer, role: str) -> set[str]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
            "JOIN pg_roles m ON m.oid = a.member WHERE r.rolname = %s",
            (role,),
        ).fetchall()
    return {name for (name,) in rows}


@pytest.fixture
def pg_members(postgres: PostgresServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """``review_read`` in a real cluster, granted outside Lapse to ``katherine`` and ``radia`` (both report to
    Ada), and recorded in the ledger as discovery records such grants (``external``)."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'review_read'").fetchone():
            admin.execute("CREATE ROLE review_read NOLOGIN")
        for login in ("katherine", "radia"):
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                admin.execute(f"CREATE ROLE {login} LOGIN")
            admin.execute(f"GRANT review_read TO {login}")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    load_into(
        settings,
        {
            "integrations": [
                {
                    "name": "pg",
                    "kind": "postgres",
                    "config": {"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True},
                    "resources": [{"name": "postgres", "roles": [{"name": "review_read"}]}],
                }
            ]
        },
    )
    with session_scope(settings.db_url) as session:
        for login in ("katherine", "radia"):
            session.add(
                Grant(
                    account=login,
                    role=PG_ROLE,
                    user_email=f"{login}@example.com",
                    path="external",
                    granted_at=datetime.now(UTC),
                )
            )
    return PG_ROLE


async def test_a_manager_keeps_one_and_revokes_two_in_postgresql_and_the_ledger_with_proof(
    api: Api, env: WorkflowEnvironment, settings: Settings, pg_members: str, postgres: PostgresServer
) -> None:
    jit = await api.request("katherine@example.com", "ledger/prod-db/read", "PT1H", "")
    await api.wait_for(jit["id"], "active")
    define(settings, name="quarterly-pg", scope={"integrations": ["pg", "ledger"]}, revoke="at_once")

    campaign_id = await review_runs.start_campaign(env.client, settings, "quarterly-pg", started_by=ADMIN)
    found = items(settings, campaign_id)
    assert sorted(found) == sorted(
        [
            ("katherine@example.com", PG_ROLE),
            ("radia@example.com", PG_ROLE),
            ("katherine@example.com", "ledger/prod-db/read"),
        ]
    )
    assert {item.reviewer for item in found.values()} == {ADMIN}
    assert found[("katherine@example.com", "ledger/prod-db/read")].request_id == jit["id"]

    decide(settings, found[("radia@example.com", PG_ROLE)], "keep", by=ADMIN)
    decide(settings, found[("katherine@example.com", PG_ROLE)], "revoke", by=ADMIN, comment="moved to finance")
    decide(settings, found[("katherine@example.com", "ledger/prod-db/read")], "revoke", by=ADMIN, comment="done")
    await review_runs.submitted(env.client, settings, campaign_id)

    revoked = await eventually(
        lambda: items(settings, campaign_id),
        until=lambda now: all(now[k].outcome == "revoked" for k in now if now[k].decision == "revoke"),
        what="the two revokes to be carried out",
        within=60,
    )
    assert members_of(postgres, "review_read") >= {"radia"}
    assert "katherine" not in members_of(postgres, "review_read")
    assert (await api.status(jit["id"]))["state"] == "revoked"

    await review_runs.close_now(env.client, settings, campaign_id, by=ADMIN)
    final = await settled(settings, campaign_id)
    assert final[("radia@example.com", PG_ROLE)].outcome == "kept"
    with session_scope(settings.db_url, write=False) as session:
        for key in [("katherine@example.com", PG_ROLE), ("katherine@example.com", "ledger/prod-db/read")]:
            item = revoked[key]
            event = session.get(AuditEvent, item.proof["audit_event"])
            grant = session.get(Grant, item.grant_id)
            assert event is not None and event.action == "grant.revoked" and event.actor == ADMIN
            assert grant is not None and not grant.active and grant.ended_at is not None
            assert item.proof["ended_at"] == grant.ended_at.isoformat()
            assert event.reason.startswith(f"access review {campaign_id}: {item.comment}")

    def closed_by() -> str | None:
        found = campaign(settings, campaign_id)
        return found.closed_by if found is not None and found.state == "closed" else None

    assert await eventually(closed_by, what="the campaign to close") == ADMIN


async def test_a_birthright_revoke_becomes_an_exception_the_next_sync_honours(
    api: Api, env: WorkflowEnvironment, schedules: None, target: FakeTarget, settings: Settings
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    assert "alan@example.com" in birthright_grants(settings, READ)
    define(settings, name="birthright-review", scope={"paths": ["birthright"], "roles": [READ]})
    campaign_id = await review_runs.start_campaign(env.client, settings, "birthright-review", started_by=ADMIN)
    alan = items(settings, campaign_id)[("alan@example.com", READ)]
    assert alan.reviewer == "linus@example.com" and alan.policy == "engineering-read"
    decide(settings, alan, "revoke", by="linus@example.com", comment="no longer on payments")

    await review_runs.close_now(env.client, settings, campaign_id, by=ADMIN)
    final = await settled(settings, campaign_id)
    item = final[("alan@example.com", READ)]
    assert item.outcome == "exception" and item.proof["audit_action"] == "birthright.revoked"
    assert ("alan@example.com", READ) not in target.held
    assert {i.outcome for k, i in final.items() if k[0] != "alan@example.com"} == {"kept"}
    with session_scope(settings.db_url, write=False) as session:
        exception = session.exec(select(BirthrightException)).one()
    assert (exception.policy, exception.user_email, exception.role) == ("engineering-read", "alan@example.com", READ)
    assert exception.created_by == "linus@example.com" and exception.campaign_id == campaign_id

    state = await sync_now(api)  # the next sync does not grant it back
    assert state["summary"]["planned"]["add"] == 0
    assert "alan@example.com" not in birthright_grants(settings, READ)
    assert ("alan@example.com", READ) not in target.held


async def test_a_recurring_definition_has_its_schedule_and_each_run_snapshots_afresh(
    api: Api, env: WorkflowEnvironment, settings: Settings
) -> None:
    name = f"quarterly-{uuid.uuid4().hex[:6]}"
    definition = define(settings, name=name, scope={"roles": ["ledger/prod-db/read"]}, schedule={"every": "P90D"})
    schedule_id = names.review_schedule_id(name)
    await review_runs.upsert_review_schedule(env.client, settings, definition)
    try:
        described = await env.client.get_schedule_handle(schedule_id).describe()
        assert described.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert [s.every.days for s in described.schedule.spec.intervals] == [90]

        first = await api.request("katherine@example.com", "ledger/prod-db/read", "PT1H", "")
        await api.wait_for(first["id"], "active")
        await env.client.get_schedule_handle(schedule_id).trigger()
        opened = await eventually(
            lambda: campaigns_of(settings, name),
            until=lambda found: found and found[0].state == "open",
            what="the first scheduled run to open",
        )
        assert opened[0].started_by == "schedule" and opened[0].items == 1
        await review_runs.close_now(env.client, settings, opened[0].id, by=ADMIN)
        await env.client.get_workflow_handle(names.review_workflow_id(opened[0].id)).result()

        async def running() -> int:
            return len((await env.client.get_schedule_handle(schedule_id).describe()).info.running_actions)

        # Overlap skip: the schedule starts no second campaign while its last run is going.
        await eventually(running, until=lambda n: n == 0, what="the scheduled run to end")

        second = await api.request("radia@example.com", "ledger/prod-db/read", "PT1H", "")
        await api.wait_for(second["id"], "active")
        await env.client.get_schedule_handle(schedule_id).trigger()
        runs = await eventually(
            lambda: campaigns_of(settings, name),
            until=lambda found: len(found) == 2 and found[1].state == "open",
            what="the second scheduled run",
        )
        assert runs[1].id != runs[0].id and runs[1].items == 2
        await review_runs.close_now(env.client, settings, runs[1].id, by=ADMIN)
    finally:
        await review_runs.delete_review_schedule(env.client, settings, name)
    with pytest.raises(Exception, match=r"not found|NotFound|not exist"):
        await env.client.get_schedule_handle(schedule_id).describe()


def campaigns_of(settings: Settings, definition: str) -> list[ReviewCampaign]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(ReviewCampaign).where(ReviewCampaign.definition == definition)
        return list(session.exec(query.order_by(col(ReviewCampaign.started_at))))

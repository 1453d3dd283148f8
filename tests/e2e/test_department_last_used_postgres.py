"""Last used, end to end: a login holds a session open in a real PostgreSQL cluster while discovery runs; the access
review then started shows the manager when that login's grant was last seen in use, and says "unknown" of a grant
nobody used — through the API, over the real workflows, with the holders' departments from the organisation file."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from sqlmodel import col, select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.postgres import PostgresServer
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, ReviewItem
from tests.conftest import Api, load_into
from tests.support import NO_SCHEDULED_DISCOVERY

ADMIN, LINUS = "ada@example.com", "linus@example.com"


@dataclass
class Logins:
    """Two logins of this test's own, both granted one role by hand; their Lapse users report to linus."""

    integration: str
    role: str
    used: str
    idle: str
    password: str

    def email(self, login: str) -> str:
        return f"{login}@example.com"

    @property
    def prefix(self) -> str:
        """The integration's ``role_prefix``: discovery sees this test's role only."""
        return self.role.removesuffix("read")


def last_used_in_ledger(settings: Settings, integration: str) -> dict[str, datetime | None]:
    with session_scope(settings.db_url, write=False) as db:
        grants = db.exec(select(Grant).where(col(Grant.role).startswith(f"{integration}/")))
        return {grant.account: grant.last_used_at for grant in grants}


def last_used_in_snapshot(settings: Settings, campaign: str) -> dict[str, datetime | None]:
    with session_scope(settings.db_url, write=False) as db:
        return {i.account: i.last_used for i in db.exec(select(ReviewItem).where(ReviewItem.campaign_id == campaign))}


@pytest_asyncio.fixture
async def logins(
    postgres: PostgresServer, settings: Settings, env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Logins]:
    suffix = uuid.uuid4().hex[:6]
    found = Logins(f"pg-{suffix}", f"u{suffix}_read", f"used{suffix}", f"idle{suffix}", secrets.token_urlsafe(16))
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(found.role)))
        for login in (found.used, found.idle):
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(login), sql.Literal(found.password))
            )
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(found.role), sql.Identifier(login)))
    people = [
        {"email": found.email(login), "name": login.title(), "manager": LINUS, "department": "Data Science"}
        for login in (found.used, found.idle)
    ]
    load_into(settings, {"users": people})
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    yield found
    with contextlib.suppress(RPCError):  # the integration's discovery schedule (ids are global on the server)
        await env.client.get_schedule_handle(names.discovery_id(found.integration)).delete()


async def test_a_login_with_a_live_session_at_discovery_shows_as_used_and_an_idle_one_as_unknown(
    api: Api, env: WorkflowEnvironment, settings: Settings, postgres: PostgresServer, logins: Logins
) -> None:
    config = {"dsn_env": "LAPSE_TEST_PG_DSN", "role_prefix": logins.prefix, "insecure": True}
    body = {"name": logins.integration, "kind": "postgres", "config": config, "discovery_every": NO_SCHEDULED_DISCOVERY}
    await api.ok(ADMIN, "POST", "/api/integrations", body)

    before = datetime.now(UTC)
    # One login is working in the database while discovery looks; the other has no session.
    with psycopg.connect(postgres.dsn(user=logins.used, password=logins.password), autocommit=True) as session:
        session.execute("SELECT 1")
        found = await api.ok(ADMIN, "POST", f"/api/integrations/{logins.integration}/discover")
    assert (found["external_found"], found["grants_in_use"]) == (2, 1)
    stamped = last_used_in_ledger(settings, logins.integration)
    seen = stamped[logins.used]
    assert stamped[logins.idle] is None
    assert seen is not None and seen >= before

    definition = {
        "name": f"usage-{logins.integration}",
        "scope": {"integrations": [logins.integration]},
        "reviewers": [{"kind": "manager"}],
        "fallback": [{"kind": "user", "name": ADMIN}],
    }
    await api.ok(ADMIN, "POST", "/api/reviews/definitions", definition)
    started = await api.ok(ADMIN, "POST", f"/api/reviews/definitions/{definition['name']}/start")
    campaign = started["campaign"]
    try:
        page = await api.ok(LINUS, "GET", "/api/reviews/items", campaign=campaign)
        shown = {item["account"]: item for item in page["items"]}
        assert set(shown) == {logins.used, logins.idle}
        used, idle = shown[logins.used], shown[logins.idle]
        assert used["last_used"] is not None and datetime.fromisoformat(used["last_used"]) == stamped[logins.used]
        assert used["last_used_said"] != "unknown" and used["last_used_said"].endswith(" UTC")
        assert (idle["last_used"], idle["last_used_said"]) == (None, "unknown")
        assert used["department"] == idle["department"] == "Data Science"
        # The snapshot itself holds it: later changes to the grant do not move what the campaign started with.
        snapshot = last_used_in_snapshot(settings, campaign)
        assert snapshot == {logins.used: stamped[logins.used], logins.idle: None}

        # A second discovery with nobody connected keeps the last use seen: "not in use now" is not "never used".
        again = await api.ok(ADMIN, "POST", f"/api/integrations/{logins.integration}/discover")
        assert again["grants_in_use"] == 0
        page = await api.ok(LINUS, "GET", "/api/reviews/items", campaign=campaign)
        assert {i["account"]: i["last_used"] for i in page["items"]} == {
            logins.used: used["last_used"],
            logins.idle: None,
        }
    finally:
        with contextlib.suppress(RPCError):
            await env.client.get_workflow_handle(names.review_workflow_id(campaign)).terminate("the test is over")

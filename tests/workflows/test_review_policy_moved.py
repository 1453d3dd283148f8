"""A birthright revoke in an access review that another birthright policy undoes: the exception is made on the
policy the grant was under, the sync re-attributes the grant to the other policy that also grants the role, and
the campaign says plainly that the revoke could not take effect (``revoke_failed``, naming both policies) instead
of claiming it happened. The access stays, in the ledger and in the target. Likewise when an admin removes the
exception before the sync acted on it: the item fails saying so, and the campaign does not wait for it for ever.

Real workflows on the dev server: the campaign, the birthright sync on its schedule, the ledger integration
backed by the test's target double (which counts every grant and revoke)."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from access import names
from access.review_runs import CampaignResult
from access.reviews import CampaignState
from starter.services import review_runs
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, BirthrightException
from tests.conftest import Api, FakeTarget, clear_sync_schedules
from tests.e2e.test_review_campaigns import decide, define, items, settled
from tests.support import eventually
from tests.workflows.test_birthright_sync import ADMIN, READ, birthright_grants, create_policy, schedules, sync_now

__all__ = ["schedules"]  # the birthright tests' fixture: the sync schedules on this test's queue

ALAN = "alan@example.com"  # engineering and platform: both policies grant him the role
MARGARET = "margaret@example.com"  # engineering only


async def test_a_birthright_revoke_another_policy_still_grants_fails_and_the_access_stays(
    api: Api, env: WorkflowEnvironment, schedules: None, target: FakeTarget, settings: Settings, audit: Any
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    await create_policy(api, "platform-read", ["platform"], [READ])  # second: the grants stay engineering-read's
    assert birthright_grants(settings, READ)[ALAN] == "engineering-read"
    grants_before = target.calls.count(("grant", ALAN, READ))

    define(settings, name="birthright-review", scope={"paths": ["birthright"], "roles": [READ]})
    campaign_id = await review_runs.start_campaign(env.client, settings, "birthright-review", started_by=ADMIN)
    found = items(settings, campaign_id)
    alan, margaret = found[(ALAN, READ)], found[(MARGARET, READ)]
    assert (alan.policy, alan.reviewer) == ("engineering-read", "linus@example.com")
    assert (margaret.policy, margaret.reviewer) == ("engineering-read", "grace@example.com")
    decide(settings, alan, "revoke", by="linus@example.com", comment="left payments")
    decide(settings, margaret, "revoke", by="grace@example.com", comment="moved to finance")

    await review_runs.close_now(env.client, settings, campaign_id, by=ADMIN)
    final = await settled(settings, campaign_id)

    # Alan: the exception on engineering-read was made, but platform-read grants the role too.
    failed = final[(ALAN, READ)]
    assert (failed.state, failed.decision, failed.outcome) == ("done", "revoke", "revoke_failed")
    assert failed.error == (
        "birthright policy 'platform-read' also grants it: the exception on 'engineering-read' does not take it away"
    )
    assert "audit_event" not in failed.proof  # no proof of a revoke that did not happen
    assert birthright_grants(settings, READ)[ALAN] == "platform-read"  # the grant did not vanish
    assert (ALAN, READ) in target.held
    assert ("revoke", ALAN, READ) not in target.calls
    relabelled = [e for e in audit(READ) if e.action == "birthright.relabelled" and e.details["user"] == ALAN]
    assert [(e.details["was"], e.details["policy"]) for e in relabelled] == [("engineering-read", "platform-read")]

    # Margaret, beside him in the same campaign: only engineering-read granted it, so it went, with its proof.
    gone = final[(MARGARET, READ)]
    assert (gone.outcome, gone.error) == ("exception", None)
    with session_scope(settings.db_url, write=False) as session:
        event = session.get(AuditEvent, gone.proof["audit_event"])
        exceptions = session.exec(select(BirthrightException).order_by(col(BirthrightException.user_email))).all()
    assert event is not None and event.action == "birthright.revoked" and event.details["user"] == MARGARET
    assert MARGARET not in birthright_grants(settings, READ) and (MARGARET, READ) not in target.held

    # Both exceptions stand on engineering-read, as the reviewers decided (alan's keeps that policy from granting
    # it should platform-read stop); the other items were kept by default.
    assert [(e.user_email, e.policy, e.item_id) for e in exceptions] == [
        (ALAN, "engineering-read", alan.id),
        (MARGARET, "engineering-read", margaret.id),
    ]
    assert {i.outcome for k, i in final.items() if k[0] not in (ALAN, MARGARET)} == {"kept"}

    # The next sync changes nothing: alan keeps it through platform-read, margaret does not get it back.
    state = await sync_now(api)
    planned = state["summary"]["planned"]
    assert (planned["add"], planned["remove"], planned["relabel"]) == (0, 0, 0)
    assert birthright_grants(settings, READ)[ALAN] == "platform-read"
    assert target.calls.count(("grant", ALAN, READ)) == grants_before


async def test_an_exception_removed_before_the_sync_acted_on_it_fails_the_item_and_the_campaign_settles(
    api: Api, env: WorkflowEnvironment, target: FakeTarget, settings: Settings
) -> None:
    await create_policy(api, "engineering-read", ["engineering"], [READ])
    # No sync schedule while the campaign carries the revoke out: the exception waits for a sync that does not come.
    await clear_sync_schedules(env.client)
    define(settings, name="birthright-review", scope={"paths": ["birthright"], "roles": [READ]})
    campaign_id = await review_runs.start_campaign(env.client, settings, "birthright-review", started_by=ADMIN)
    decide(settings, items(settings, campaign_id)[(ALAN, READ)], "revoke", by="linus@example.com", comment="x")
    await review_runs.close_now(env.client, settings, campaign_id, by=ADMIN)

    def made() -> list[BirthrightException]:
        with session_scope(settings.db_url, write=False) as session:
            return list(session.exec(select(BirthrightException)))

    (exception,) = await eventually(made, what="the review to make its birthright exception")
    # An admin removes it before any sync acted on it (the removal starts the sync, which keeps alan's grant).
    removed = await api.call(ADMIN, "DELETE", f"/api/birthright/policies/engineering-read/exceptions/{exception.id}")
    assert removed.status_code == 204, removed.text
    final = await settled(settings, campaign_id)

    failed = final[(ALAN, READ)]
    assert (failed.state, failed.outcome) == ("done", "revoke_failed")
    assert failed.error == (
        "the exception was removed before the birthright sync acted on it: policy 'engineering-read' still grants it"
    )
    assert birthright_grants(settings, READ)[ALAN] == "engineering-read" and (ALAN, READ) in target.held
    assert ("revoke", ALAN, READ) not in target.calls
    # Nothing left to settle: the campaign's run ends (it would otherwise look again, and trigger syncs, for ever).
    handle = env.client.get_workflow_handle(names.review_workflow_id(campaign_id), result_type=CampaignResult)
    assert (await handle.result()).state is CampaignState.CLOSED

"""The request lifecycle through the HTTP API on the real dev server, in real time: approvals, grants,
expiry, revoke, extension, and attempts to break the invariants. The workflow alone is in tests/workflows/."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from access import names
from tests.conftest import Api, FakeTarget
from tests.support import eventually
from workflows.access_request import AccessRequestWorkflow

DEPLOY = "ledger/payments-api/deploy"  # manager-approval: alan's manager is linus
WRITE = "ledger/prod-db/write"  # sensitive: ken -> manager margaret, then owner frances
ADMIN = "ledger/prod-db/admin"  # critical: manager, then 2 of owners (frances, radia) + security (ada, radia)
READ = "ledger/prod-db/read"  # read-only: up to 1h automatic

# Tests marked every_app_db lean on the grants ledger and the audit chain: they also run with
# a PostgreSQL app DB.


async def _search_attribute_becomes(
    handle: WorkflowHandle[Any, Any], key: SearchAttributeKey[Any], value: object
) -> None:
    """Search attributes reach visibility a moment after the state change that set them."""

    async def seen() -> object:
        return (await handle.describe()).typed_search_attributes.get(key)

    await eventually(seen, until=lambda current: current == value, what=f"{key.name} to be {value!r}")


@pytest.mark.every_app_db
async def test_one_step_lifecycle_grants_then_lapses(api: Api, target: FakeTarget, audit) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT3S", "hotfix for INC-1")
    assert created["state"] == "pending"
    assert created["steps"][0]["eligible"] == ["linus@example.com"]
    assert created["steps"][0]["state"] == "open"

    waiting = await api.ok("linus@example.com", "GET", "/api/approvals")
    assert [r["id"] for r in waiting] == [created["id"]]

    decided = await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "ok"})
    assert decided["state"] in ("provisioning", "active")
    active = await api.wait_for(created["id"], "active")
    assert ("alan@example.com", DEPLOY) in target.held
    granted_at = datetime.fromisoformat(active["granted_at"])
    expires_at = datetime.fromisoformat(active["expires_at"])
    assert (expires_at - granted_at).total_seconds() == 3  # the clock starts at the grant

    grants = await api.ok("alan@example.com", "GET", "/api/grants")
    assert [(g["role"], g["path"], g["request_id"]) for g in grants] == [(DEPLOY, "jit", created["id"])]

    ended = await api.wait_for(created["id"], "expired", timeout=15)
    assert datetime.fromisoformat(ended["ended_at"]) >= expires_at
    assert ("alan@example.com", DEPLOY) not in target.held
    assert await api.ok("alan@example.com", "GET", "/api/grants") == []

    actions = [e.action for e in audit(names.request_workflow_id(created["id"]))]
    assert actions == [
        "request.created",
        "step.opened",
        "request.approved",  # linus's decision
        "request.approved",  # the round is complete
        "grant.provisioned",
        "grant.expired",
    ]


async def test_short_read_is_granted_without_approval(api: Api, target: FakeTarget) -> None:
    created = await api.request("katherine@example.com", READ, "PT5M", "")
    assert created["steps"] == []
    active = await api.wait_for(created["id"], "active")
    assert active["rule"] == "quick look"
    assert ("katherine@example.com", READ) in target.held


async def test_denial_ends_the_request_without_access(api: Api, target: FakeTarget, audit) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    denied = await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/deny", {"comment": "not today"})
    assert denied["state"] == "denied"
    assert denied["ended_by"] == "linus@example.com"
    assert denied["end_reason"] == "not today"
    assert target.calls == []
    events = audit(names.request_workflow_id(created["id"]))
    assert events[-1].action == "request.denied" and events[-1].actor == "linus@example.com"


@pytest.mark.every_app_db
async def test_requester_cannot_approve_own_request(api: Api, target: FakeTarget, audit) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    response = await api.call("alan@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert response.status_code == 403
    assert "own request" in response.json()["detail"]
    assert (await api.status(created["id"]))["state"] == "pending"
    refused = [e for e in audit(names.request_workflow_id(created["id"])) if e.action.endswith(".refused")]
    assert [(e.actor, e.action) for e in refused] == [("alan@example.com", "request.approve.refused")]


async def test_ineligible_approver_is_refused_and_audited(api: Api, audit) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    response = await api.call("margaret@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert response.status_code == 403
    assert "not an eligible approver" in response.json()["detail"]
    assert (await api.status(created["id"]))["steps"][0]["decisions"] == []
    assert any(e.action == "request.approve.refused" for e in audit(names.request_workflow_id(created["id"])))


async def test_two_step_request_needs_both_steps_in_order(api: Api, target: FakeTarget) -> None:
    created = await api.request("ken@example.com", WRITE)
    assert [s["state"] for s in created["steps"]] == ["open", "waiting"]
    early = await api.call("frances@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert early.status_code == 403  # the owner's step is not open yet

    after_manager = await api.ok("margaret@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert [s["state"] for s in after_manager["steps"]] == ["approved", "open"]
    assert after_manager["steps"][1]["eligible"] == ["frances@example.com"]
    assert target.calls == []

    await api.ok("frances@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "active")
    assert ("ken@example.com", WRITE) in target.held


async def test_quorum_counts_distinct_eligible_people(api: Api) -> None:
    created = await api.request("ken@example.com", ADMIN)
    await api.ok("margaret@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    status = await api.status(created["id"])
    assert status["steps"][1]["eligible"] == ["ada@example.com", "frances@example.com", "radia@example.com"]
    assert status["steps"][1]["quorum"] == 2

    await api.ok("radia@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    again = await api.call("radia@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert again.status_code == 409
    assert "already decided" in again.json()["detail"]
    status = await api.status(created["id"])
    assert status["state"] == "pending"
    assert len(status["steps"][1]["decisions"]) == 1

    await api.ok("frances@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "active")


@pytest.mark.every_app_db
async def test_concurrent_duplicate_approvals_count_once(api: Api) -> None:
    created = await api.request("ken@example.com", ADMIN)
    await api.ok("margaret@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    responses = await asyncio.gather(
        *[api.call("radia@example.com", "POST", f"/api/requests/{created['id']}/approve", {}) for _ in range(5)]
    )
    assert sorted(r.status_code for r in responses).count(200) == 1
    status = await api.status(created["id"])
    assert status["state"] == "pending"
    assert [d["approver"] for d in status["steps"][1]["decisions"]] == ["radia@example.com"]


async def test_decision_after_the_request_ended_is_refused(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    await api.ok("alan@example.com", "POST", f"/api/requests/{created['id']}/cancel", {"comment": "not needed"})
    late = await api.call("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert late.status_code == 409
    status = await api.status(created["id"])
    assert status["state"] == "cancelled"
    assert status["steps"][0]["decisions"] == []


@pytest.mark.parametrize("settings_overrides", [{"approval_timeout": "PT2S"}])
async def test_request_without_decision_times_out(api: Api, target: FakeTarget) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    ended = await api.wait_for(created["id"], "timed_out", timeout=15)
    assert "no decision" in ended["end_reason"]
    assert target.calls == []


async def _updates_accepted(handle: WorkflowHandle[Any, Any], name: str) -> int:
    """How many ``name`` updates the run has accepted: in its history once its handler has started."""
    history = await handle.fetch_history()
    return sum(
        event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name == name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


@pytest.mark.every_app_db
async def test_revoke_during_provisioning_still_ends_with_access_removed(
    api: Api, target: FakeTarget, env: WorkflowEnvironment
) -> None:
    target.grant_gate.clear()  # the target hangs while granting
    created = await api.request("katherine@example.com", READ, "PT10M", "")
    await api.wait_for(created["id"], "provisioning")
    revoking = asyncio.create_task(
        api.ok("katherine@example.com", "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"})
    )
    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    await eventually(
        lambda: _updates_accepted(handle, "revoke"), until=lambda accepted: accepted == 1, what="the revoke to arrive"
    )
    # The revoke arrived while the grant was still being made: nothing is granted yet, nobody answered.
    assert (await api.status(created["id"]))["state"] == "provisioning"
    assert target.calls == [] and not revoking.done()
    target.grant_gate.set()
    ended = await revoking
    assert ended["state"] == "revoked"
    assert ended["ended_by"] == "katherine@example.com"
    assert ("katherine@example.com", READ) not in target.held
    assert [c[0] for c in target.calls] == ["grant", "revoke"]


async def test_giving_back_early_revokes_at_once(api: Api, target: FakeTarget) -> None:
    created = await api.request("katherine@example.com", READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    other = await api.call("alan@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert other.status_code == 403  # neither the requester nor an admin
    ended = await api.ok("katherine@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert ended["state"] == "revoked"
    assert ("katherine@example.com", READ) not in target.held


async def test_admin_revokes_someone_elses_grant(api: Api, target: FakeTarget) -> None:
    created = await api.request("katherine@example.com", READ, "PT30M", "")
    await api.wait_for(created["id"], "active")
    ended = await api.ok("ada@example.com", "POST", f"/api/requests/{created['id']}/revoke", {"comment": "leaver"})
    assert (ended["state"], ended["ended_by"], ended["end_reason"]) == ("revoked", "ada@example.com", "leaver")


@pytest.mark.every_app_db
async def test_overlapping_grants_keep_access_until_the_last_ends(api: Api, target: FakeTarget) -> None:
    first = await api.request("katherine@example.com", READ, "PT30M", "")
    second = await api.request("katherine@example.com", READ, "PT30M", "")
    await api.wait_for(first["id"], "active")
    await api.wait_for(second["id"], "active")
    assert [c[0] for c in target.calls] == ["grant"]  # the second grant is counted, not provisioned again
    assert len(await api.ok("katherine@example.com", "GET", "/api/grants")) == 2

    await api.ok("katherine@example.com", "POST", f"/api/requests/{first['id']}/revoke", {})
    assert ("katherine@example.com", READ) in target.held
    assert [c[0] for c in target.calls] == ["grant"]

    await api.ok("katherine@example.com", "POST", f"/api/requests/{second['id']}/revoke", {})
    assert ("katherine@example.com", READ) not in target.held
    assert [c[0] for c in target.calls] == ["grant", "revoke"]


@pytest.mark.every_app_db
async def test_concurrent_revokes_of_overlapping_grants_remove_access(api: Api, target: FakeTarget) -> None:
    ids = [(await api.request("katherine@example.com", READ, "PT30M", ""))["id"] for _ in range(3)]
    for request_id in ids:
        await api.wait_for(request_id, "active")
    await asyncio.gather(*[api.ok("katherine@example.com", "POST", f"/api/requests/{i}/revoke", {}) for i in ids])
    assert ("katherine@example.com", READ) not in target.held


async def test_extension_within_an_automatic_rule_moves_the_expiry(api: Api) -> None:
    created = await api.request("katherine@example.com", READ, "PT10M", "")
    active = await api.wait_for(created["id"], "active")
    extended = await api.ok(
        "katherine@example.com", "POST", f"/api/requests/{created['id']}/extend", {"duration": "PT20M"}
    )
    before = datetime.fromisoformat(active["expires_at"])
    after = datetime.fromisoformat(extended["expires_at"])
    assert (after - before).total_seconds() == 20 * 60
    assert extended["extensions"][0]["state"] == "approved"


async def test_extension_beyond_the_rules_maximum_is_refused(api: Api) -> None:
    created = await api.request("katherine@example.com", READ, "PT7H", "month-end close")
    await api.wait_for(created["id"], "pending")
    await api.ok("ada@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "active")
    response = await api.call(
        "katherine@example.com", "POST", f"/api/requests/{created['id']}/extend", {"duration": "PT2H"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "duration"
    status = await api.status(created["id"])
    assert status["extensions"] == []


@pytest.mark.every_app_db
async def test_extension_that_needs_approval_waits_for_it(api: Api) -> None:
    created = await api.request("katherine@example.com", READ, "PT30M", "")
    active = await api.wait_for(created["id"], "active")
    pending = await api.ok(
        "katherine@example.com",
        "POST",
        f"/api/requests/{created['id']}/extend",
        {"duration": "PT2H", "justification": "month-end close"},
    )
    assert pending["expires_at"] == active["expires_at"]
    assert pending["extensions"][0]["state"] == "pending"
    assert [r["id"] for r in await api.ok("ada@example.com", "GET", "/api/approvals")] == [created["id"]]

    approved = await api.ok("ada@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert approved["extensions"][0]["state"] == "approved"
    moved = datetime.fromisoformat(approved["expires_at"]) - datetime.fromisoformat(active["expires_at"])
    assert moved.total_seconds() == 2 * 3600


async def test_failing_revoke_is_visible_and_retried_until_it_succeeds(
    api: Api, target: FakeTarget, env: WorkflowEnvironment, audit
) -> None:
    target.revoke_failures = 4  # first try (3 attempts) fails, then the endless retry succeeds
    created = await api.request("katherine@example.com", READ, "PT2S", "")
    await api.wait_for(created["id"], "active")
    failing = await api.wait_for(created["id"], "revoking", timeout=20)
    assert "unreachable" in failing["revoke_error"]
    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    await _search_attribute_becomes(handle, names.STATE, "revoking")
    assert ("katherine@example.com", READ) in target.held

    ended = await api.wait_for(created["id"], "expired", timeout=30)
    assert ended["revoke_error"] is None
    assert ("katherine@example.com", READ) not in target.held
    actions = [e.action for e in audit(names.request_workflow_id(created["id"]))]
    assert "grant.revoke_failing" in actions and actions[-1] == "grant.expired"


async def test_permanent_provisioning_error_fails_the_request_clearly(api: Api, target: FakeTarget) -> None:
    target.permanent_grant_error = "role does not exist in the target"
    created = await api.request("katherine@example.com", READ, "PT5M", "")
    failed = await api.wait_for(created["id"], "failed", timeout=20)
    assert "role does not exist in the target" in failed["end_reason"]
    assert await api.ok("katherine@example.com", "GET", "/api/grants") == []


async def test_operator_finds_a_request_by_search_attributes(api: Api, env: WorkflowEnvironment) -> None:
    created = await api.request("katherine@example.com", READ, "PT10M", "")
    await api.wait_for(created["id"], "active")
    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    await _search_attribute_becomes(handle, names.STATE, "active")
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(names.REQUESTER) == "katherine@example.com"
    assert attributes.get(names.ROLE) == READ
    assert attributes.get(names.RESOURCE) == "ledger/prod-db"
    assert attributes.get(names.STATE) == "active"
    assert attributes.get(names.EXPIRES_AT) is not None
    summary = await description.static_summary()
    assert summary is not None and summary.startswith("katherine@example.com → ledger/prod-db/read")
    status = await handle.query(AccessRequestWorkflow.status)
    assert status.state == "active" and status.requester == "katherine@example.com"
    assert description.status == WorkflowExecutionStatus.RUNNING


async def test_one_step_lifecycle_stays_within_forty_history_events(api: Api, env: WorkflowEnvironment) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1S")
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "expired", timeout=15)
    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    history = await handle.fetch_history()
    assert len(history.events) <= 40

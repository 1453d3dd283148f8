"""A hostile requester, a careless approver and a failing target against the request workflow: the
findings of the adversarial review (issue 8), each named after its number, on the real dev server."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, delete, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from access import names
from access.connectors import PermanentError, Target
from access.limits import MAX_EXTENSIONS
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, Group, Membership, User
from tests.conftest import Api, FakeTarget, load_into
from tests.support import eventually

READ = "ledger/prod-db/read"  # read-only: up to 1h automatic
WRITE = "ledger/prod-db/write"  # sensitive: on call -> one other on-call engineer
ADMIN = "ledger/prod-db/admin"  # critical: manager, then 2 of owners (frances, radia) + security (ada, radia)
DEPLOY = "ledger/payments-api/deploy"  # manager-approval: alan's manager is linus
VIEWER = "ledger/billing-reports/viewer"


class HostileTarget(FakeTarget):
    """The test's target, with the faults these tests need on top of FakeTarget's."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_after_grant: str | None = None
        """Grant in the target, then fail as if the answer was lost."""
        self.revoke_gate = threading.Event()
        self.revoke_gate.set()
        self.revoke_started = threading.Event()
        """A revoke reached the target (and may be held at the gate)."""

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        super().grant(account, target, expires_at)
        if self.fail_after_grant:
            raise PermanentError(self.fail_after_grant)

    def revoke(self, account: str, target: Target) -> None:
        self.revoke_started.set()
        self.revoke_gate.wait(timeout=30)
        super().revoke(account, target)


@pytest.fixture
def target() -> HostileTarget:
    return HostileTarget()


async def _history_length(env: WorkflowEnvironment, request_id: str) -> int:
    handle = env.client.get_workflow_handle(names.request_workflow_id(request_id))
    return (await handle.describe()).raw_description.workflow_execution_info.history_length


# --- finding 1: a requester can make a grant permanent -------------------------------------------


def _loose_viewer(settings: Settings) -> None:
    """The viewer role under a rule that extends automatically up to a day: the attacker's best case."""
    load_into(
        settings,
        {
            "approval_workflows": [
                {
                    "name": "self-service",
                    "rules": [{"name": "anyone", "max_duration": "P1D", "justification": False}],
                }
            ],
            "assignments": [{"workflow": "self-service", "scope": VIEWER}],
        },
    )


async def test_f1_endless_extensions_leave_the_history_small(
    api: Api, env: WorkflowEnvironment, settings: Settings, target: HostileTarget
) -> None:
    _loose_viewer(settings)
    created = await api.request("katherine@example.com", VIEWER, "PT5M", "")
    await api.wait_for(created["id"], "active")
    path = f"/api/requests/{created['id']}/extend"
    body = {"duration": "PT1S", "justification": "x" * 1500}

    attempts = int(os.environ.get("LAPSE_ABUSE_ATTEMPTS", "200"))  # `make chaos`: 1,000
    answers = [(await api.call("katherine@example.com", "POST", path, body)).status_code for _ in range(attempts)]

    assert answers[:MAX_EXTENSIONS] == [200] * MAX_EXTENSIONS
    assert set(answers[MAX_EXTENSIONS:]) == {409}
    refusal = await api.call("katherine@example.com", "POST", path, body)
    assert "extensions, the most one request may" in refusal.json()["detail"]
    status = await api.status(created["id"])
    assert len(status["extensions"]) == MAX_EXTENSIONS
    # Each answer is small and refusals leave no trace: the run stays far from Temporal's limits.
    assert await _history_length(env, created["id"]) < 400

    granted, expires = datetime.fromisoformat(status["granted_at"]), datetime.fromisoformat(status["expires_at"])
    assert expires - granted == timedelta(minutes=5, seconds=MAX_EXTENSIONS)
    ended = await api.ok("katherine@example.com", "POST", f"/api/requests/{created['id']}/revoke", {})
    assert ended["state"] == "revoked"
    assert ("katherine@example.com", VIEWER) not in target.held


async def test_f1_oversized_justification_never_reaches_the_workflow(
    api: Api, env: WorkflowEnvironment, settings: Settings
) -> None:
    _loose_viewer(settings)
    created = await api.request("katherine@example.com", VIEWER, "PT1M", "")
    await api.wait_for(created["id"], "active")
    before = await _history_length(env, created["id"])

    response = await api.call(
        "katherine@example.com",
        "POST",
        f"/api/requests/{created['id']}/extend",
        {"duration": "PT1S", "justification": "x" * 20_000},
    )

    assert response.status_code == 422
    assert response.json()["field"] == "justification"
    assert await _history_length(env, created["id"]) == before


# --- finding 3: one person satisfying several steps ----------------------------------------------


async def test_f3_one_person_cannot_approve_two_steps_of_a_request(api: Api, target: HostileTarget) -> None:
    # Grace's manager is Ada, who is also in security, one of the two the second step needs.
    created = await api.request("grace@example.com", ADMIN, "PT10M", "migration")
    await api.ok("ada@example.com", "POST", f"/api/requests/{created['id']}/approve", {})

    waiting = await api.ok("ada@example.com", "GET", "/api/approvals")
    assert created["id"] not in [r["id"] for r in waiting]
    again = await api.call("ada@example.com", "POST", f"/api/requests/{created['id']}/approve", {})

    assert again.status_code == 403
    assert "already approved step 'manager'" in again.json()["detail"]
    await api.ok("frances@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert (await api.status(created["id"]))["state"] == "pending"
    await api.ok("radia@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    active = await api.wait_for(created["id"], "active")
    approvers = [d["approver"] for step in active["steps"] for d in step["decisions"]]
    assert sorted(approvers) == ["ada@example.com", "frances@example.com", "radia@example.com"]


# --- finding 12: automatic extensions beyond the rule's maximum ----------------------------------


async def test_f12_concurrent_automatic_extensions_stop_at_the_rule_that_allowed_them(
    api: Api, settings: Settings
) -> None:
    load_into(
        settings,
        {
            "approval_workflows": [
                {
                    "name": "loose",
                    "rules": [
                        {
                            "name": "quick",
                            "when": {"duration_at_most": "PT1H"},
                            "max_duration": "PT8H",
                            "justification": False,
                        },
                        {"name": "longer", "steps": [{"approvers": [{"kind": "manager"}]}], "max_duration": "PT8H"},
                    ],
                }
            ],
            "assignments": [{"workflow": "loose", "scope": VIEWER}],
        },
    )
    created = await api.request("katherine@example.com", VIEWER, "PT40M", "")
    await api.wait_for(created["id"], "active")
    path = f"/api/requests/{created['id']}/extend"

    answers = await asyncio.gather(
        *[api.call("katherine@example.com", "POST", path, {"duration": "PT15M"}) for _ in range(4)]
    )

    assert sorted(a.status_code for a in answers)[0] == 200
    status = await api.status(created["id"])
    granted, expires = datetime.fromisoformat(status["granted_at"]), datetime.fromisoformat(status["expires_at"])
    assert expires - granted == timedelta(minutes=55)  # one applied; the others were judged for 55 min too
    assert [e["state"] for e in status["extensions"]] == ["approved"]


# --- finding 13: a failed provisioning is never compensated --------------------------------------


async def test_f13_provisioning_that_failed_after_reaching_the_target_is_taken_back(
    api: Api, settings: Settings, target: HostileTarget, audit
) -> None:
    target.fail_after_grant = "the answer was lost (injected by the test)"
    created = await api.request("katherine@example.com", READ, "PT10M", "")

    ended = await api.wait_for(created["id"], "failed", timeout=60)

    assert "the answer was lost" in ended["end_reason"]
    assert ("katherine@example.com", READ) not in target.held
    assert [c[0] for c in target.calls] == ["grant", "revoke"]
    with session_scope(settings.db_url, write=False) as session:
        assert session.exec(select(Grant).where(col(Grant.active).is_(True))).all() == []


# --- finding 15: revokes that hang, late extensions, stale approvers, chatty refusals -------------


async def test_f15_revoke_answers_while_the_target_keeps_failing(api: Api, target: HostileTarget) -> None:
    created = await api.request("katherine@example.com", READ, "PT10M", "")
    await api.wait_for(created["id"], "active")
    target.revoke_failures = 10_000

    answer = await asyncio.wait_for(
        api.ok("katherine@example.com", "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"}),
        timeout=20,
    )

    assert answer["state"] == "revoking"
    assert "target unreachable" in answer["revoke_error"]
    target.revoke_failures = 0
    ended = await api.wait_for(created["id"], "revoked", timeout=30)
    assert ended["ended_by"] == "katherine@example.com"
    assert ("katherine@example.com", READ) not in target.held


async def test_f15_extension_once_the_time_is_up_is_refused(api: Api, target: HostileTarget) -> None:
    target.revoke_gate.clear()  # the revoke at expiry hangs in the target
    created = await api.request("katherine@example.com", READ, "PT2S", "")
    await api.wait_for(created["id"], "active")
    await eventually(target.revoke_started.is_set, what="the revoke at expiry to reach the target")

    late = await api.call(
        "katherine@example.com", "POST", f"/api/requests/{created['id']}/extend", {"duration": "PT5M"}
    )

    assert late.status_code == 409
    assert "expiring" in late.json()["detail"]
    target.revoke_gate.set()
    ended = await api.wait_for(created["id"], "expired", timeout=30)
    assert ended["extensions"] == []


async def test_f15_approver_who_left_the_group_can_no_longer_decide(api: Api, settings: Settings) -> None:
    # Alan is on call: one other on-call engineer (Barbara) approves his write access.
    created = await api.request("alan@example.com", WRITE, "PT10M", "incident")
    assert created["steps"][0]["eligible"] == ["barbara@example.com"]
    with session_scope(settings.db_url) as session:
        barbara = session.exec(select(User).where(User.email == "barbara@example.com")).one()
        oncall = session.exec(select(Group).where(Group.name == "oncall-platform")).one()
        session.exec(
            delete(Membership).where(col(Membership.user_id) == barbara.id, col(Membership.group_id) == oncall.id)
        )

    response = await api.call("barbara@example.com", "POST", f"/api/requests/{created['id']}/approve", {})

    assert response.status_code == 403
    assert "no longer an eligible approver" in response.json()["detail"]
    assert (await api.status(created["id"]))["steps"][0]["decisions"] == []


async def test_f15_refusal_does_not_list_who_may_approve(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY)

    response = await api.call("ken@example.com", "POST", f"/api/requests/{created['id']}/approve", {})

    assert response.status_code == 403
    assert "linus@example.com" not in response.json()["detail"]


async def test_f15_overlong_comment_is_refused_by_the_workflow_itself(env: WorkflowEnvironment, api: Api) -> None:
    # The API refuses it first; the workflow does not rely on that (a caller may reach Temporal directly).
    from access.requests import DecisionInput
    from workflows.access_request import AccessRequestWorkflow

    created = await api.request("alan@example.com", DEPLOY)
    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            AccessRequestWorkflow.approve,
            DecisionInput(actor="linus@example.com", comment="x" * 5000, request_id=created["id"]),
        )
    assert "at most 2000 are allowed" in str(refused.value.cause)
    status: Any = await api.status(created["id"])
    assert status["steps"][0]["decisions"] == []


async def test_f1_a_long_hold_continues_as_new_keeping_its_grant_and_open_extension(
    api: Api, env: WorkflowEnvironment, target: HostileTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A threshold low enough that a few extensions take the run past it (the sandbox reads it per run).
    monkeypatch.setattr("access.limits.HISTORY_EVENTS_BEFORE_CONTINUE", 40)
    created = await api.request("alan@example.com", DEPLOY, "PT10M", "hotfix")
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "active")
    path = f"/api/requests/{created['id']}/extend"
    for _ in range(3):
        await api.ok("alan@example.com", "POST", path, {"duration": "PT1M", "justification": "still fixing"})
        await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    pending = await api.ok("alan@example.com", "POST", path, {"duration": "PT1M", "justification": "one more"})
    assert pending["extensions"][-1]["state"] == "pending"

    handle = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    runs = await _runs(env, handle.id)
    assert len(runs) > 1  # it continued as new while holding the grant
    decided = await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    assert [e["state"] for e in decided["extensions"]] == ["approved"] * 4
    granted, expires = datetime.fromisoformat(decided["granted_at"]), datetime.fromisoformat(decided["expires_at"])
    assert expires - granted == timedelta(minutes=14)
    assert ("alan@example.com", DEPLOY) in target.held

    ended = await api.ok("alan@example.com", "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done"})
    assert ended["state"] == "revoked"
    assert ("alan@example.com", DEPLOY) not in target.held
    assert [c[0] for c in target.calls] == ["grant", "extend", "extend", "extend", "extend", "revoke"]


async def _runs(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    """The run ids of a workflow once it has more than one (visibility lags a moment behind), oldest first."""

    async def runs() -> list[str]:
        return [execution.run_id async for execution in env.client.list_workflows(f'WorkflowId = "{workflow_id}"')]

    found = await eventually(runs, until=lambda ids: len(ids) > 1, what=f"{workflow_id} to continue as new")
    return found[::-1]


# --- finding 14: an API that cannot keep up holds its callers for 30 s ---------------------------


@pytest.mark.parametrize(
    "settings_overrides", [{"max_pending_submits": 1, "admission_wait": "PT0.2S", "submit_timeout": "PT5S"}]
)
async def test_f14_an_api_whose_workers_are_behind_turns_new_requests_away_at_once(
    env: WorkflowEnvironment, settings: Settings, audit
) -> None:
    import httpx

    from starter.api.app import create_app

    # No worker polls this queue: the first request waits for one to record it, holding the only place.
    queue = f"nobody-polls-{uuid.uuid4().hex[:8]}"
    app = create_app(settings.model_copy(update={"task_queue": queue}), client=env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
        body = {"role": READ, "duration": "PT5M", "justification": ""}
        headers = {"X-Forwarded-Email": "katherine@example.com"}
        first = asyncio.create_task(http.post("/api/requests", json=body, headers=headers, timeout=30))

        async def started() -> list[str]:
            return [execution.id async for execution in env.client.list_workflows(f'TaskQueue = "{queue}"')]

        await eventually(started, what="the first request's run to start (it holds the place meanwhile)")
        second = await http.post("/api/requests", json=body, headers=headers, timeout=30)
        assert not first.done()  # refused while the first still waits: not held behind it
        assert second.status_code == 503
        assert second.headers["Retry-After"] == "2"
        assert "nothing was started" in second.json()["detail"]
        assert (await first).status_code == 503  # the first did start, and says so
    created = [e for e in audit() if e.action == "request.created"]
    assert created == []  # no worker recorded anything; the refused one started nothing


@pytest.mark.parametrize("started", [True, False], ids=["started", "not-started"])
async def test_a_start_that_failed_mid_call_says_whether_the_request_exists(
    api: Api, env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, started: bool
) -> None:
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    original = Client.execute_update_with_start_workflow

    async def flaky(self: Client, *args: Any, **kwargs: Any) -> Any:
        if started:
            await original(self, *args, **kwargs)
        raise RPCError("context deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    monkeypatch.setattr(Client, "execute_update_with_start_workflow", flaky)
    response = await api.call(
        "katherine@example.com", "POST", "/api/requests", {"role": READ, "duration": "PT5M", "justification": ""}
    )

    assert response.status_code == 503
    problem = response.json()
    if started:
        assert "was started" in problem["detail"] and "proceeds" in problem["detail"]
        assert (await api.wait_for(problem["id"], "active"))["requester"] == "katherine@example.com"
    else:
        assert "nothing was started" in problem["detail"]
        assert response.headers["Retry-After"] == "2"


async def test_f4_a_decision_made_for_one_request_is_refused_by_another(env: WorkflowEnvironment, api: Api) -> None:
    # Payloads are sealed, but someone who can reach Temporal could replay Linus's sealed approval of one
    # request into another he may approve: the decision names its request, and the other one refuses it.
    from access.requests import DecisionInput
    from workflows.access_request import AccessRequestWorkflow

    first = await api.request("alan@example.com", DEPLOY)
    second = await api.request("alan@example.com", DEPLOY)
    replayed = DecisionInput(actor="linus@example.com", comment="ok", request_id=first["id"])
    handle = env.client.get_workflow_handle(names.request_workflow_id(second["id"]))

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(AccessRequestWorkflow.approve, replayed)

    assert f"sent for request {first['id']}" in str(refused.value.cause)
    assert (await api.status(second["id"]))["steps"][0]["decisions"] == []

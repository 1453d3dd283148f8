"""/api/approvals and deciding: each approver sees what awaits them, and a refused decision says why."""

from __future__ import annotations

from typing import Any

from tests.api.answers import problem
from tests.conftest import Api

DEPLOY = "ledger/payments-api/deploy"
"""manager-approval: alan's manager, linus, approves."""


async def test_a_pending_request_waits_on_its_approver_only(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1H")
    assert [r["id"] for r in await api.ok("linus@example.com", "GET", "/api/approvals")] == [created["id"]]
    for someone_else in ("alan@example.com", "grace@example.com", "ada@example.com"):
        assert await api.ok(someone_else, "GET", "/api/approvals") == []

    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "ok"})
    assert await api.ok("linus@example.com", "GET", "/api/approvals") == []


async def test_a_decision_the_workflow_refuses_is_a_problem_and_audited(api: Api, audit: Any) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1H")
    url = f"/api/requests/{created['id']}"
    # Refused by the workflow itself: its kind decides the status.
    detail = problem(await api.call("grace@example.com", "POST", f"{url}/approve", {}), 403, None)
    assert "not an eligible approver" in detail
    problem(await api.call("alan@example.com", "POST", f"{url}/deny", {}), 403)

    await api.ok("linus@example.com", "POST", f"{url}/deny", {"comment": "not now"})
    # Whether the run is still finishing or gone, a decision on a denied request conflicts with its state.
    assert "denied" in problem(await api.call("linus@example.com", "POST", f"{url}/approve", {}), 409, None)
    refusals = [(e.actor, e.action) for e in audit(f"access-request-{created['id']}") if e.action.endswith(".refused")]
    assert ("grace@example.com", "request.approve.refused") in refusals
    assert ("alan@example.com", "request.deny.refused") in refusals

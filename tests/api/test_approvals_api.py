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


async def test_a_withdrawn_request_leaves_its_approvers_list(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1H")
    assert [r["id"] for r in await api.ok("linus@example.com", "GET", "/api/approvals")] == [created["id"]]
    await api.ok("alan@example.com", "POST", f"/api/requests/{created['id']}/cancel", {"comment": "not needed"})
    assert await api.ok("linus@example.com", "GET", "/api/approvals") == []


async def test_a_decision_by_another_approver_changes_each_approvers_list(api: Api) -> None:
    """The two-person rule: ken's manager (margaret), then 2 of the owners (frances, radia) and security (ada,
    radia)."""
    created = await api.request("ken@example.com", "ledger/prod-db/admin", "PT1H")
    url = f"/api/requests/{created['id']}"

    async def waiting_for(who: str) -> list[str]:
        return [r["id"] for r in await api.ok(who, "GET", "/api/approvals")]

    assert await waiting_for("margaret@example.com") == [created["id"]]
    assert await waiting_for("frances@example.com") == []  # not before the step they decide opens
    await api.ok("margaret@example.com", "POST", f"{url}/approve", {})
    assert await waiting_for("margaret@example.com") == []
    for owner_or_security in ("frances@example.com", "radia@example.com", "ada@example.com"):
        assert await waiting_for(owner_or_security) == [created["id"]]

    await api.ok("radia@example.com", "POST", f"{url}/approve", {"comment": "one of two"})
    assert await waiting_for("radia@example.com") == []  # decided: not theirs to decide again
    assert await waiting_for("frances@example.com") == [created["id"]]  # still one approval short
    await api.ok("ada@example.com", "POST", f"{url}/deny", {"comment": "not today"})
    assert await waiting_for("frances@example.com") == [] and await waiting_for("ada@example.com") == []


async def test_an_extension_awaiting_a_decision_is_in_the_approvers_list(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY, "PT1H")
    url = f"/api/requests/{created['id']}"
    await api.ok("linus@example.com", "POST", f"{url}/approve", {})
    await api.wait_for(created["id"], "active")
    assert await api.ok("linus@example.com", "GET", "/api/approvals") == []

    await api.ok("alan@example.com", "POST", f"{url}/extend", {"duration": "PT30M", "justification": "overrun"})
    waiting = await api.ok("linus@example.com", "GET", "/api/approvals")
    assert [(r["id"], r["state"], r["extensions"][-1]["state"]) for r in waiting] == [
        (created["id"], "active", "pending")
    ]
    assert await api.ok("alan@example.com", "GET", "/api/approvals") == []  # never one's own

    await api.ok("linus@example.com", "POST", f"{url}/approve", {"comment": "fine"})
    assert await api.ok("linus@example.com", "GET", "/api/approvals") == []


async def test_the_list_is_paged_oldest_first_with_a_link_to_the_next_page(api: Api) -> None:
    made = [
        await api.request("alan@example.com", DEPLOY, "PT1H"),
        await api.request("barbara@example.com", DEPLOY, "PT1H"),
        await api.request("alan@example.com", "ledger/payments-api/read", "PT2H"),  # longer than a quick look
    ]
    first = await api.call("linus@example.com", "GET", "/api/approvals", limit=2)
    assert first.status_code == 200
    assert [r["id"] for r in first.json()] == [made[0]["id"], made[1]["id"]]
    following = first.links["next"]["url"]
    assert following == f"/api/approvals?limit=2&after={made[1]['id']}"

    second = await api.call("linus@example.com", "GET", following)
    assert [r["id"] for r in second.json()] == [made[2]["id"]]
    assert "link" not in second.headers  # the last page

    everything = await api.call("linus@example.com", "GET", "/api/approvals")
    assert [r["id"] for r in everything.json()] == [r["id"] for r in made] and "link" not in everything.headers


async def test_paging_refuses_a_bad_limit_or_cursor_naming_it(api: Api) -> None:
    problem(await api.call("linus@example.com", "GET", "/api/approvals", limit=0), 422, "limit")
    problem(await api.call("linus@example.com", "GET", "/api/approvals", limit=501), 422, "limit")
    detail = problem(await api.call("linus@example.com", "GET", "/api/approvals", after="nosuchreq"), 422, "after")
    assert "nosuchreq" in detail

"""The API's contract: who may call it, what it refuses and how it says so."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from access.requests import RequestStatus
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest
from tests.api.answers import problem
from tests.conftest import Api

DEPLOY = "ledger/payments-api/deploy"


async def test_caller_must_be_a_known_active_user(api: Api) -> None:
    problem(await api.call(None, "GET", "/api/requests"), 401, "X-Forwarded-Email")
    detail = problem(await api.call("mallory@example.com", "GET", "/api/requests"), 401, "X-Forwarded-Email")
    assert "mallory@example.com" in detail


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"role": "ledger/nope/x", "duration": "PT1H", "justification": "x"}, 404, "role", "no role"),
        ({"role": DEPLOY, "duration": "2 hours", "justification": "x"}, 422, "duration", "ISO 8601"),
        ({"role": DEPLOY, "duration": 0, "justification": "x"}, 422, "duration", "longer than zero"),
        ({"role": DEPLOY, "duration": "-PT1H", "justification": "x"}, 422, "duration", "longer than zero"),
        ({"role": DEPLOY, "duration": "P2D", "justification": "x"}, 422, "duration", "longer than the P1D"),
        ({"role": DEPLOY, "duration": "PT1H", "justification": "  "}, 422, "justification", "requires a justification"),
        ({"role": DEPLOY, "duration": "PT1H"}, 422, "justification", "requires a justification"),
        (
            {"role": "people/hr-system/admin", "duration": "PT1H", "justification": "x"},
            403,
            "role",
            "no approval workflow",
        ),
        ({"role": DEPLOY, "duration": "PT1H", "justification": "x", "extra": 1}, 422, "extra", None),
        ({"duration": "PT1H", "justification": "x"}, 422, "role", None),
    ],
)
async def test_bad_requests_are_refused_before_anything_starts(
    api: Api, settings: Settings, body, status, field, says, audit
) -> None:
    detail = problem(await api.call("alan@example.com", "POST", "/api/requests", body), status, field)
    if says:
        assert says in detail
    assert await api.ok("alan@example.com", "GET", "/api/requests") == []
    with session_scope(settings.db_url, write=False) as session:
        assert session.execute(text("select count(*) from accessrequest")).scalar() == 0


async def test_policy_refusals_are_audited(api: Api, audit) -> None:
    await api.call(
        "alan@example.com", "POST", "/api/requests", {"role": DEPLOY, "duration": "P2D", "justification": "x"}
    )
    events = audit(DEPLOY)
    assert [(e.actor, e.action) for e in events] == [("alan@example.com", "request.create.refused")]
    assert "P1D" in events[0].reason


async def test_requester_who_is_the_only_eligible_approver_is_told_at_creation(api: Api) -> None:
    # frances is the only owner of prod-db/write, so its owner step could never be decided
    response = await api.call(
        "frances@example.com",
        "POST",
        "/api/requests",
        {"role": "ledger/prod-db/write", "duration": "PT1H", "justification": "x"},
    )
    detail = problem(response, 422, "role")
    assert "only eligible approver" in detail


@pytest.mark.parametrize("settings_overrides", [{"max_pending_per_requester": 2}])
async def test_a_requester_cannot_flood_the_approvers(api: Api, audit) -> None:
    first = await api.request("alan@example.com", DEPLOY)
    await api.request("alan@example.com", DEPLOY)
    body = {"role": DEPLOY, "duration": "PT30S", "justification": "and another"}
    response = await api.call("alan@example.com", "POST", "/api/requests", body)
    detail = problem(response, 429, None)
    assert "LAPSE_MAX_PENDING_PER_REQUESTER is 2" in detail and "2 requests awaiting approval" in detail
    assert response.headers["Retry-After"] == "60" and response.json()["limit"] == 2
    assert len(await api.ok("alan@example.com", "GET", "/api/requests")) == 2  # nothing started for it
    assert [e.action for e in audit(DEPLOY)] == ["request.create.refused"]
    # Someone else is not held back by it; and once one of alan's is withdrawn, he may ask again.
    assert (await api.call("margaret@example.com", "POST", "/api/requests", body)).status_code == 201
    await api.ok("alan@example.com", "POST", f"/api/requests/{first['id']}/cancel", {"comment": "not needed"})
    await api.wait_for(first["id"], "cancelled")
    assert (await api.call("alan@example.com", "POST", "/api/requests", body)).status_code == 201


async def test_request_is_visible_to_requester_approvers_and_admins_only(api: Api) -> None:
    created = await api.request("alan@example.com", DEPLOY)
    for user in ("alan@example.com", "linus@example.com", "ada@example.com"):
        assert (await api.ok(user, "GET", f"/api/requests/{created['id']}"))["id"] == created["id"]
    problem(await api.call("ken@example.com", "GET", f"/api/requests/{created['id']}"), 403)
    problem(await api.call("ken@example.com", "GET", "/api/requests/doesnotexist"), 404, "id")
    problem(await api.call("linus@example.com", "POST", "/api/requests/doesnotexist/approve", {}), 404, "id")
    assert await api.ok("ken@example.com", "GET", "/api/requests") == []
    assert [r["id"] for r in await api.ok("ada@example.com", "GET", "/api/requests")] == [created["id"]]
    assert [r["id"] for r in await api.ok("ada@example.com", "GET", "/api/requests", state="pending")] == [
        created["id"]
    ]
    assert await api.ok("ada@example.com", "GET", "/api/requests", state="active") == []
    problem(await api.call("ada@example.com", "GET", "/api/requests", state="bogus"), 422, "state")


async def test_openapi_documents_every_route(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    paths = set(spec["paths"])
    for path in (
        "/api/catalog",
        "/api/requests",
        "/api/requests/{request_id}",
        "/api/requests/{request_id}/approve",
        "/api/requests/{request_id}/deny",
        "/api/requests/{request_id}/cancel",
        "/api/requests/{request_id}/revoke",
        "/api/requests/{request_id}/extend",
        "/api/approvals",
        "/api/grants",
        "/api/audit",
    ):
        assert path in paths


async def test_temporal_outage_is_a_503_problem_not_a_crash(settings: Settings) -> None:
    import httpx
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from starter.api.app import create_app

    client = await Client.connect(settings.temporal_address, data_converter=pydantic_data_converter)
    # Same server, but a namespace that does not exist: every call to Temporal fails.
    broken = Client(client.service_client, namespace="no-such-namespace", data_converter=pydantic_data_converter)
    app = create_app(settings, client=broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
        response = await http.post(
            "/api/requests",
            json={"role": DEPLOY, "duration": "PT1H", "justification": "x"},
            headers={"X-Forwarded-Email": "alan@example.com"},
        )
    detail = problem(response, 503)
    assert detail.startswith("the workflow service failed") and "nothing was started" in detail
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("settings_overrides", [{"submit_timeout": "PT2S"}])
async def test_request_with_no_worker_running_answers_503_not_a_hang(env, settings: Settings) -> None:
    import httpx

    from starter.api.app import create_app

    app = create_app(settings, client=env.client)  # no worker polls this test's task queue
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
        response = await http.post(
            "/api/requests",
            json={"role": DEPLOY, "duration": "PT1H", "justification": "x"},
            headers={"X-Forwarded-Email": "alan@example.com"},
        )
    detail = problem(response, 503)
    assert "no Lapse worker recorded it" in detail
    handle = env.client.get_workflow_handle(f"access-request-{response.json()['id']}")
    await handle.terminate("test cleanup")


@pytest.mark.parametrize("settings_overrides", [{"submit_timeout": "PT2S"}])
async def test_a_decision_no_worker_answers_in_time_says_it_may_still_take_effect(env, settings: Settings) -> None:
    import httpx

    from starter.api.app import create_app

    app = create_app(settings, client=env.client)  # no worker polls this test's task queue
    headers = {"X-Forwarded-Email": "alan@example.com"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
        body = {"role": DEPLOY, "duration": "PT1H", "justification": "x"}
        started = await http.post("/api/requests", json=body, headers=headers)
        request_id = started.json()["id"]
        recorded = {"id": request_id, "requester": "alan@example.com", "role": DEPLOY, "duration": "PT1H"}
        recorded |= {"justification": "x", "created_at": "2026-12-02T09:00:00Z", "policy": "p", "rule": "r"}
        with session_scope(settings.db_url) as session:  # as a worker would have recorded it
            session.add(
                AccessRequest(
                    id=request_id,
                    requester="alan@example.com",
                    role=DEPLOY,
                    state="pending",
                    created_at=datetime(2026, 12, 2, 9, tzinfo=UTC),
                    status=RequestStatus.model_validate(recorded).model_dump(mode="json"),
                )
            )
        response = await http.post(
            f"/api/requests/{request_id}/approve", json={}, headers={"X-Forwarded-Email": "linus@example.com"}
        )
    # Not "nothing changed": the workflow service holds the decision, and a worker may yet apply it.
    detail = problem(response, 503)
    assert "may still take effect" in detail and "read the request before trying again" in detail
    assert response.headers["Retry-After"] == "5"
    await env.client.get_workflow_handle(f"access-request-{request_id}").terminate("test cleanup")

"""/api/birthright: managing ordered policies, what the API refuses and how it says so, and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest

from store.settings import Settings
from tests.api.answers import problem
from tests.conftest import Api

ADMIN = "ada@example.com"
READ = "ledger/payments-api/read"
VIEWER = "ledger/billing-reports/viewer"
POLICIES = "/api/birthright/policies"


async def _create(api: Api, name: str, groups: list[str], roles: list[str], **extra: Any) -> Any:
    response = await api.call(ADMIN, "POST", POLICIES, {"name": name, "groups": groups, "roles": roles, **extra})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"name": "x", "groups": ["nope"], "roles": [READ]}, 422, "groups", "unknown group 'nope'"),
        ({"name": "x", "groups": ["finance"], "roles": ["ledger/nope/x"]}, 422, "roles", "unknown role"),
        ({"name": "x", "groups": ["finance"], "roles": ["payments-api"]}, 422, "roles", "unknown role"),
        ({"name": "x", "groups": [], "roles": [READ]}, 422, "groups", None),
        ({"name": "", "groups": ["finance"], "roles": [READ]}, 422, "name", None),
        ({"groups": ["finance"], "roles": [READ]}, 422, "name", None),
        ({"name": "x", "groups": ["finance"], "roles": [READ], "position": -1}, 422, "position", None),
    ],
)
async def test_bad_policies_are_refused_naming_the_field(
    api: Api, body: dict[str, Any], status: int, field: str, says: str | None
) -> None:
    detail = problem(await api.call(ADMIN, "POST", POLICIES, body), status, field)
    if says:
        assert says in detail
    assert await api.ok(ADMIN, "GET", POLICIES) == []


async def test_policies_are_ordered_edited_reordered_and_deleted_with_an_audit_trail(api: Api, audit: Any) -> None:
    await _create(api, "finance", ["finance"], [VIEWER])
    await _create(api, "engineering", ["engineering"], [READ], description="baseline")
    await _create(api, "security", ["security"], [READ, VIEWER], position=0)
    assert [p["name"] for p in await api.ok(ADMIN, "GET", POLICIES)] == ["security", "finance", "engineering"]
    problem(
        await api.call(ADMIN, "POST", POLICIES, {"name": "finance", "groups": ["finance"], "roles": [READ]}),
        409,
        "name",
    )

    edited = await api.ok(ADMIN, "PUT", f"{POLICIES}/engineering", {"groups": ["engineering", "data"]})
    assert edited["groups"] == ["engineering", "data"] and edited["roles"] == [READ]
    problem(await api.call(ADMIN, "PUT", f"{POLICIES}/engineering", {"roles": ["x/y/z"]}), 422, "roles")
    problem(await api.call(ADMIN, "PUT", f"{POLICIES}/nope", {"roles": [READ]}), 404, "name")

    problem(await api.call(ADMIN, "POST", f"{POLICIES}/order", {"names": ["finance", "security"]}), 422, "names")
    order = ["engineering", "finance", "finance"]
    problem(await api.call(ADMIN, "POST", f"{POLICIES}/order", {"names": order}), 422, "names")
    reordered = await api.ok(ADMIN, "POST", f"{POLICIES}/order", {"names": ["engineering", "finance", "security"]})
    assert [(p["name"], p["position"]) for p in reordered] == [("engineering", 0), ("finance", 1), ("security", 2)]

    response = await api.call(ADMIN, "DELETE", f"{POLICIES}/finance")
    assert response.status_code == 204
    assert [(p["name"], p["position"]) for p in await api.ok(ADMIN, "GET", POLICIES)] == [
        ("engineering", 0),
        ("security", 1),
    ]
    actions = [e.action for e in audit() if e.action.startswith("birthright_policy.")]
    assert actions == [
        "birthright_policy.created",
        "birthright_policy.created",
        "birthright_policy.created",
        "birthright_policy.updated",
        "birthright_policy.reordered",
        "birthright_policy.deleted",
    ]
    assert all(e.actor == ADMIN for e in audit() if e.action.startswith("birthright_policy."))


async def test_only_admins_manage_policies(api: Api) -> None:
    body = {"name": "x", "groups": ["finance"], "roles": [READ]}
    assert (await api.call("alan@example.com", "POST", POLICIES, body)).status_code == 403
    assert (await api.call("alan@example.com", "GET", POLICIES)).status_code == 403
    preview = {"action": "create", "policy": body}
    assert (await api.call("alan@example.com", "POST", "/api/birthright/preview", preview)).status_code == 403


async def test_preview_of_bad_changes_names_the_field_and_saves_nothing(api: Api, audit: Any) -> None:
    bad = {"action": "create", "policy": {"name": "x", "groups": ["nope"], "roles": [READ]}}
    problem(await api.call(ADMIN, "POST", "/api/birthright/preview", bad), 422, "policy.groups")
    problem(await api.call(ADMIN, "POST", "/api/birthright/preview", {"action": "delete", "name": "x"}), 404, "name")
    problem(await api.call(ADMIN, "POST", "/api/birthright/preview", {"action": "rename"}), 422, "action")

    good = {"action": "create", "policy": {"name": "finance", "groups": ["finance", "security"], "roles": [VIEWER]}}
    preview = await api.ok(ADMIN, "POST", "/api/birthright/preview", good)
    assert [(i["user"], i["role"], i["policy"]) for i in preview["gains"]] == [
        ("ada@example.com", VIEWER, "finance"),
        ("katherine@example.com", VIEWER, "finance"),
        ("radia@example.com", VIEWER, "finance"),
    ]
    assert preview["losses"] == [] and preview["counts"]["by_role"] == {VIEWER: {"add": 3}}
    limited = await api.ok(ADMIN, "POST", "/api/birthright/preview?limit=1", good)
    assert len(limited["gains"]) == 1 and limited["truncated"] is True
    assert await api.ok(ADMIN, "GET", POLICIES) == []
    assert not [e for e in audit() if e.action.startswith("birthright")]


async def test_roles_of_an_integration_with_a_login_per_grant_are_refused(api: Api, settings: Settings) -> None:
    """Ephemeral credentials end with their grant; birthright access has no end, so it cannot use them."""
    from store.db import session_scope
    from store.tables import Integration, Resource, Role

    with session_scope(settings.db_url) as session:
        integration = Integration(name="pg-eph", kind="postgres", config={"dsn_env": "LAPSE_X", "ephemeral": True})
        session.add(integration)
        session.flush()
        resource = Resource(integration_id=integration.id, name="db")  # type: ignore[arg-type]
        session.add(resource)
        session.flush()
        session.add(Role(resource_id=resource.id, name="reader", path="pg-eph/db/reader"))  # type: ignore[arg-type]
    body = {"name": "eph", "groups": ["engineering"], "roles": ["pg-eph/db/reader"]}
    response = await api.call("ada@example.com", "POST", "/api/birthright/policies", body)
    assert response.status_code == 422 and response.json()["field"] == "roles"
    assert "login per grant" in response.json()["detail"]

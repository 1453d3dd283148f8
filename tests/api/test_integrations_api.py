"""/api/integrations: admins connect target systems, tune their roles and see their grants; every refusal
names the field at fault and nothing is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from store.db import session_scope
from store.settings import Settings
from store.tables import Grant
from tests.api.answers import problem
from tests.conftest import Api

ADMIN = "ada@example.com"
AS_ADMIN = {"X-Forwarded-Email": ADMIN}
INTEGRATIONS = "/api/integrations"
NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "x", "kind": "ledger", "discovery_every": "PT30S"}, "discovery_every", "at least one minute"),
        ({"name": "x", "kind": "mainframe"}, "kind", "unknown integration kind 'mainframe'"),
        ({"name": "x", "kind": "ledger", "directory": True}, "directory", "only an ldap integration"),
        ({"name": "x", "kind": "postgres", "config": {"nonsense": 1}}, "config", "nonsense"),
        ({"name": "Not Valid", "kind": "ledger"}, "name", None),
    ],
)
async def test_an_integration_that_could_never_work_is_refused(
    api: Api, body: dict[str, Any], field: str, says: str | None
) -> None:
    detail = problem(await api.call(ADMIN, "POST", INTEGRATIONS, body), 422, field)
    if says:
        assert says in detail
    assert "x" not in {i["name"] for i in await api.ok(ADMIN, "GET", INTEGRATIONS)}


async def test_an_integration_is_created_once_and_audited(api: Api, audit: Any) -> None:
    body = {"name": "books", "kind": "ledger", "description": "The books", "discovery_every": "PT1H"}
    created = await api.ok(ADMIN, "POST", INTEGRATIONS, body)
    assert (created["name"], created["kind"], created["discovery_every"], created["roles"]) == (
        "books",
        "ledger",
        "PT1H",
        0,
    )
    assert (await api.ok(ADMIN, "GET", f"{INTEGRATIONS}/books"))["description"] == "The books"
    assert problem(await api.call(ADMIN, "POST", INTEGRATIONS, body), 409, "name") == (
        "an integration named 'books' already exists"
    )
    assert [(e.actor, e.action) for e in audit("books")] == [(ADMIN, "integration.created")]


async def test_an_unknown_integration_is_404_naming_it(api: Api) -> None:
    for method, path in [("GET", "nope"), ("GET", "nope/roles"), ("GET", "nope/grants"), ("POST", "nope/discover")]:
        detail = problem(await api.call(ADMIN, method, f"{INTEGRATIONS}/{path}"), 404, "name")
        assert detail == "there is no integration 'nope'"


async def test_the_ledger_has_no_target_to_discover(api: Api) -> None:
    detail = problem(await api.call(ADMIN, "POST", f"{INTEGRATIONS}/ledger/discover"), 409, "name")
    assert "has no target to discover" in detail


async def test_roles_are_listed_with_their_holders_and_tuned_with_an_audit_trail(
    api: Api, settings: Settings, audit: Any
) -> None:
    with session_scope(settings.db_url) as session:
        session.add(Grant(account="alan", role="ledger/prod-db/read", user_email="alan@example.com", granted_at=NOW))
    roles = {r["path"]: r for r in await api.ok(ADMIN, "GET", f"{INTEGRATIONS}/ledger/roles")}
    assert roles["ledger/prod-db/read"]["holders"] == 1 and roles["ledger/prod-db/write"]["holders"] == 0

    changed = await api.ok(ADMIN, "PATCH", f"{INTEGRATIONS}/ledger/roles/prod-db/read", {"jit_only": True})
    assert changed["jit_only"] is True and changed["holders"] == 1
    (event,) = audit("ledger/prod-db/read")
    assert (event.actor, event.action, event.details) == (ADMIN, "role.updated", {"jit_only": True})
    problem(await api.call(ADMIN, "PATCH", f"{INTEGRATIONS}/ledger/roles/prod-db/nope", {}), 404, "role")


async def _grants(api: Api, **params: str) -> Any:
    # ``path`` is a query parameter here, which ``Api.ok`` would take for its own.
    response = await api.http.get(f"{INTEGRATIONS}/ledger/grants", params=params, headers=AS_ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_integrations_grants_are_filtered_by_path(api: Api, settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        session.add(Grant(account="alan", role="ledger/prod-db/read", user_email="alan@example.com", granted_at=NOW))
        session.add(Grant(account="svc-backup", role="ledger/prod-db/read", path="external", granted_at=NOW))
    grants = await _grants(api, path="external")
    assert [(g["account"], g["path"], g["user"]) for g in grants] == [("svc-backup", "external", None)]
    assert [g["account"] for g in await _grants(api, unlinked="true")] == ["svc-backup"]
    assert len(await _grants(api)) == 2
    assert await api.ok(ADMIN, "GET", f"{INTEGRATIONS}/people/grants") == []
    bogus = await api.http.get(f"{INTEGRATIONS}/ledger/grants", params={"path": "bogus"}, headers=AS_ADMIN)
    detail = problem(bogus, 422, "path")
    assert detail == "path must be jit, birthright or external"

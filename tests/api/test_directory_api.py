"""/api/directory: admins see the groups by source and how the directory sync last ran, and run it now."""

from __future__ import annotations

from tests.api.answers import problem
from tests.conftest import Api

ADMIN = "ada@example.com"


async def test_groups_are_listed_with_the_reference_a_policy_uses(api: Api) -> None:
    groups = {g["name"]: g for g in await api.ok(ADMIN, "GET", "/api/directory/groups", source="file")}
    assert groups["engineering"]["source"] == "file" and groups["engineering"]["reference"] == "engineering"
    assert groups["engineering"]["members"] == 8 and groups["engineering"]["namesakes"] == 0
    only = await api.ok(ADMIN, "GET", "/api/directory/groups", name="security")
    assert [(g["name"], g["members"]) for g in only] == [("security", 2)]
    assert await api.ok(ADMIN, "GET", "/api/directory/groups", source="corp-ldap") == []
    problem(await api.call(ADMIN, "GET", "/api/directory/groups", limit=0), 422, "limit")


async def test_the_sync_state_says_when_nothing_has_run_yet(api: Api) -> None:
    state = await api.ok(ADMIN, "GET", "/api/directory/sync")
    assert state == {"name": "directory-sync", "started_at": None, "finished_at": None, "summary": {}, "error": None}


async def test_running_the_sync_now_is_accepted(api: Api) -> None:
    response = await api.call(ADMIN, "POST", "/api/directory/sync")
    assert response.status_code == 202
    assert response.json() == {"triggered": True, "schedule": "directory-sync"}
    problem(await api.call("alan@example.com", "POST", "/api/directory/sync"), 403)

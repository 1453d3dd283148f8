"""Requests for a real LDAP group and a real SCIM group, through the API and the workflow, to their lapse.

Each integration is created through the API, its groups found by discovery, and the demo's
``read-only`` approval workflow assigned to it: short requests are granted at once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlmodel import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.ldap import LdapServer
from harness.scim import ScimServer
from store.db import session_scope
from store.settings import Settings
from tests.conftest import Api, load_into

ADMIN = "ada@example.com"
KATHERINE = "katherine@example.com"


@dataclass
class Directory:
    """One integration in a real target: its role path and how to read the group's members."""

    name: str
    role: str
    members: Callable[[], set[str]]
    katherine: str
    """Katherine's account in the target, as the members reader reports it."""


async def _connect(api: Api, settings: Settings, name: str, kind: str, config: dict[str, Any]) -> list[str]:
    """Create the integration through the API, discover it, and make it requestable; returns its role paths."""
    response = await api.call(ADMIN, "POST", "/api/integrations", {"name": name, "kind": kind, "config": config})
    assert response.status_code == 201, response.text
    tested = await api.ok(ADMIN, "POST", f"/api/integrations/{name}/test")
    assert tested["ok"], tested
    await api.ok(ADMIN, "POST", f"/api/integrations/{name}/discover")
    load_into(settings, {"assignments": [{"workflow": "read-only", "scope": name}]})
    return [r["path"] for r in await api.ok(ADMIN, "GET", f"/api/integrations/{name}/roles")]


@pytest_asyncio.fixture
async def cleanup(env: WorkflowEnvironment) -> AsyncIterator[list[str]]:
    """Integration names whose discovery schedules to delete after the test."""
    created: list[str] = []
    yield created
    for name in created:
        with contextlib.suppress(RPCError):
            await env.client.get_schedule_handle(names.discovery_id(name)).delete()


@pytest_asyncio.fixture
async def ldap_group(
    api: Api,
    settings: Settings,
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
    cleanup: list[str],
) -> Directory:
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    katherine = ldap_server.add_user(f"katherine-{suffix}", base=people, email=KATHERINE, name="Katherine")
    grace = ldap_server.add_user(f"grace-{suffix}", base=people, email="grace@example.com", name="Grace")
    group = ldap_server.add_group("billing-readers", [grace], base=groups, description="reads billing")
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", ldap_server.admin_password)
    name = f"ldap-{suffix}"
    cleanup.append(name)
    config = {
        "url": ldap_server.url,
        "bind_dn": ldap_server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "insecure": True,  # the test's slapd is plain ldap:// on loopback
        "users_base": people,
        "groups_base": groups,
    }
    roles = await _connect(api, settings, name, "ldap", config)
    assert roles == [f"{name}/groups/billing-readers"]
    return Directory(name, roles[0], lambda: ldap_server.members(group), katherine.lower())


@pytest_asyncio.fixture
async def scim_group(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch, cleanup: list[str]
) -> AsyncIterator[Directory]:
    server = ScimServer().start()  # an app of the test's own: userNames are emails, as in most apps
    katherine = server.create_user(KATHERINE, email=KATHERINE)
    server.create_user("grace@example.com", email="grace@example.com")
    group_id = server.create_group("billing-readers")
    monkeypatch.setenv("LAPSE_TEST_SCIM_TOKEN", server.token)
    name = f"scim-{uuid.uuid4().hex[:6]}"
    cleanup.append(name)
    config = {"base_url": server.base_url, "token_env": "LAPSE_TEST_SCIM_TOKEN", "insecure": True}
    roles = await _connect(api, settings, name, "scim", config)
    assert roles == [f"{name}/app/billing-readers"]
    yield Directory(name, roles[0], lambda: server.members(group_id), katherine)
    server.stop()


@pytest.fixture(params=["ldap", "scim"])
def directory(request: pytest.FixtureRequest) -> Directory:
    group: Directory = request.getfixturevalue(f"{request.param}_group")
    return group


async def test_group_membership_is_granted_then_lapses(api: Api, directory: Directory) -> None:
    assert directory.katherine not in directory.members()
    created = await api.request(KATHERINE, directory.role, "PT4S", "")
    await api.wait_for(created["id"], "active")
    assert directory.katherine in directory.members()

    ended = await api.wait_for(created["id"], "expired", timeout=30)
    assert ended["ended_by"] == "lapse"
    assert directory.katherine not in directory.members()


async def test_overlapping_grants_keep_the_membership_until_the_last_ends(api: Api, directory: Directory) -> None:
    first = await api.request(KATHERINE, directory.role, "PT30M", "")
    second = await api.request(KATHERINE, directory.role, "PT30M", "")
    await api.wait_for(first["id"], "active")
    await api.wait_for(second["id"], "active")

    await api.ok(KATHERINE, "POST", f"/api/requests/{first['id']}/revoke", {})
    assert directory.katherine in directory.members()
    await api.ok(KATHERINE, "POST", f"/api/requests/{second['id']}/revoke", {})
    assert directory.katherine not in directory.members()


async def test_a_group_removed_from_the_target_fails_the_request_clearly(
    api: Api, directory: Directory, settings: Settings
) -> None:
    from store.tables import Role

    with session_scope(settings.db_url) as session:
        role = session.exec(select(Role).where(Role.path == directory.role)).one()
        role.name = "no-such-group"
    created = await api.request(KATHERINE, directory.role, "PT5M", "")
    failed = await api.wait_for(created["id"], "failed", timeout=30)
    assert "no-such-group" in failed["end_reason"]
    assert "not found" in failed["end_reason"] or "does not exist" in failed["end_reason"]

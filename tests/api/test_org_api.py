"""/api/org: an admin loads an organisation file; what is refused, how it says so, and that nothing is kept."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from store.db import session_scope
from store.settings import Settings
from store.tables import BirthrightPolicy, Integration, User
from tests.api.answers import problem
from tests.conftest import Api

ADMIN = "ada@example.com"

PG_REPORTS = {
    "users": [{"email": "zoe@example.com", "name": "Zoe", "manager": "ada@example.com", "groups": ["finance"]}],
    "integrations": [
        {
            "name": "reports",
            "kind": "ledger",
            "resources": [{"name": "warehouse", "roles": [{"name": "read", "owners": ["ada@example.com"]}]}],
        }
    ],
    "assignments": [{"workflow": "read-only", "scope": "reports"}],
    "birthright_policies": [{"name": "finance-reads", "groups": ["finance"], "roles": ["reports/warehouse/read"]}],
}


def _stored(settings: Settings) -> tuple[set[str], set[str], set[str]]:
    with session_scope(settings.db_url, write=False) as session:
        return (
            set(session.exec(select(User.email))),
            set(session.exec(select(Integration.name))),
            set(session.exec(select(BirthrightPolicy.name))),
        )


async def test_an_admin_loads_a_file_and_what_it_implies_starts(api: Api, settings: Settings, audit: Any) -> None:
    loaded = await api.ok(ADMIN, "POST", "/api/org", PG_REPORTS)
    assert loaded["loaded"] == {
        "users": 1,
        "groups": 0,
        "integrations": 1,
        "approval_workflows": 0,
        "assignments": 1,
        "birthright_policies": 1,
    }
    assert loaded["applied"] and loaded["open_references"] == [] and loaded["notes"] == []
    assert loaded["started"] == ["birthright-sync"]
    users, integrations, policies = _stored(settings)
    assert "zoe@example.com" in users and "reports" in integrations and policies == {"finance-reads"}
    catalog = await api.ok("zoe@example.com", "GET", "/api/catalog")
    assert "reports/warehouse/read" in [entry["role"] for entry in catalog]
    [event] = audit("org")
    assert (event.actor, event.action, event.details["loaded"]["users"]) == (ADMIN, "org.loaded", 1)

    again = await api.ok(ADMIN, "POST", "/api/org", PG_REPORTS)  # loading is idempotent
    assert again["loaded"]["users"] == 1 and _stored(settings) == (users, integrations, policies)


async def test_someone_not_an_admin_is_refused_and_nothing_is_stored(api: Api, settings: Settings) -> None:
    before = _stored(settings)
    problem(await api.call("alan@example.com", "POST", "/api/org", PG_REPORTS), 403)
    problem(await api.call("alan@example.com", "GET", "/api/org/open-references"), 403)
    assert _stored(settings) == before


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        # The file's shape, as FastAPI validates the body.
        ({"approval_workflows": [{"name": "x", "rules": [{"name": "r", "max_duration": "soon"}]}]},
         "approval_workflows.0.rules.0.max_duration", "soon"),
        ({"users": [{"email": "zoe@example.com", "nickname": "z"}]}, "users.0.nickname", "Extra inputs"),
        ({"integrations": [{"name": "x", "resources": [{"name": "r", "roles": [{"name": "a/b"}]}]}]},
         "integrations.0.resources.0.roles.0.name", "cannot be empty or hold '/'"),
        ({"groups": [{"name": "g", "description": "a\x00b"}]},
         "body", "groups.0.description contains control characters (U+0000)"),
        # What it refers to, as the service checks it whole.
        ({"users": [{"email": "zoe@example.com", "manager": "nobody@example.com"}]},
         "users.0.manager", "user zoe@example.com: manager nobody@example.com is not a user"),
        ({"integrations": [{"name": "x", "kind": "scim", "config": {"base_url": "https://s.example.com/v2",
                                                                   "token_file": "/etc/passwd"}}]},
         "integrations.0.config.token_file", "secrets directory"),
        ({"birthright_policies": [{"name": "p", "groups": ["nope"], "roles": ["reports/warehouse/read"]}]},
         "birthright_policies.0.groups", "birthright policy p: unknown group nope"),
    ],
)  # fmt: skip
async def test_an_invalid_file_is_a_422_naming_the_field_and_nothing_of_it_is_stored(
    api: Api, settings: Settings, change: dict[str, Any], field: str, says: str
) -> None:
    before = _stored(settings)
    detail = problem(await api.call(ADMIN, "POST", "/api/org", PG_REPORTS | change), 422, field)
    assert says in detail
    assert _stored(settings) == before  # not the valid users, integration or policy beside the fault either


async def test_every_problem_is_listed(api: Api) -> None:
    body = {
        "users": [{"email": f"u{i}@example.com", "manager": "nobody@example.com"} for i in range(30)],
        "assignments": [{"workflow": "nope", "scope": "ledger"}],
    }
    answer = (await api.call(ADMIN, "POST", "/api/org", body)).json()
    assert answer["status"] == 422 and answer["field"] == "users.0.manager"
    assert [e["field"] for e in answer["errors"]] == [f"users.{i}.manager" for i in range(20)]
    assert answer["detail"].endswith("; and 11 more")  # 30 managers and the workflow: the first 20 named


async def test_an_organisation_file_may_be_larger_than_other_bodies(api: Api) -> None:
    big = {"groups": [{"name": "big", "description": "x" * 100_000}]}
    assert (await api.ok(ADMIN, "POST", "/api/org", big))["loaded"]["groups"] == 1
    problem(await api.call(ADMIN, "POST", "/api/requests", {"justification": "x" * 100_000}), 413, "body")


async def test_a_policy_over_a_directory_and_an_integration_not_synced_yet_loads_in_one_go(api: Api) -> None:
    """Its groups wait for the directory's first sync and its role for the first discovery; both are started
    (here they fail: no directory, no database), and the references stay listed as open."""
    body = {
        "integrations": [
            {
                "name": "corp",
                "kind": "ldap",
                "directory": True,
                "config": {
                    "url": "ldaps://dc1.example.invalid:636",
                    "bind_dn": "cn=lapse,dc=corp",
                    "password_env": "LAPSE_TEST_UNSET_LDAP_PASSWORD",
                    "users_base": "ou=people,dc=corp",
                    "groups_base": "ou=groups,dc=corp",
                },
            },
            {"name": "pg", "kind": "postgres", "config": {"dsn_env": "LAPSE_TEST_UNSET_PG_DSN"}},
        ],
        "birthright_policies": [{"name": "db", "groups": ["corp:dbusers"], "roles": ["pg/app/app_read"]}],
    }
    loaded = await api.ok(ADMIN, "POST", "/api/org", body)
    assert [(o["kind"], o["reference"]) for o in loaded["open_references"]] == [
        ("group", "corp:dbusers"),
        ("role", "pg/app/app_read"),
    ]
    assert loaded["started"] == ["discovery-pg", "directory-sync", "birthright-sync"]
    assert loaded["applied"] and "discovery of pg failed" in loaded["notes"][0]
    still_open = await api.ok(ADMIN, "GET", "/api/org/open-references")
    assert [(o["policy"], o["why"]) for o in still_open] == [
        ("db", "unknown group corp:dbusers"),
        ("db", "unknown role pg/app/app_read"),
    ]

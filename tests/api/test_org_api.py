"""/api/org: an admin loads an organisation file; what is refused, how it says so, and that nothing is kept."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlmodel import select

from access.limits import MAX_BODY_BYTES
from store.db import session_scope
from store.org import OrgFile
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
        "reviews": 0,
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


def _canonical_sha256(body: dict[str, Any]) -> str:
    canonical = json.dumps(OrgFile.model_validate(body).model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def test_a_load_audits_what_it_created_and_updated_and_the_files_digest(api: Api, audit: Any) -> None:
    """Every policy change is audited: per section, the names a load created and updated (what it left as it was
    is not named), the users whose admin or active flag or file groups changed, and the SHA-256 of the file."""
    loaded = await api.ok(ADMIN, "POST", "/api/org", PG_REPORTS)
    [first] = audit("org")
    assert first.details["sha256"] == loaded["sha256"] == _canonical_sha256(PG_REPORTS)
    assert first.details["changes"] == {
        "users": {"created": 1, "groups_changed": ["zoe@example.com"]},
        "integrations": {"created": ["reports"]},
        "roles": {"created": ["reports/warehouse/read"]},
        "assignments": {"created": ["reports → read-only"]},
        "birthright_policies": {"created": ["finance-reads"]},
    }

    changed = PG_REPORTS | {
        "users": [
            {
                "email": "zoe@example.com",
                "name": "Zoe",
                "manager": "ada@example.com",
                "groups": ["finance"],
                "admin": True,
            },
            {"email": "ken@example.com", "name": "Ken Thompson", "active": False},
        ],
        "approval_workflows": [{"name": "night", "rules": [{"name": "r", "max_duration": "PT1H"}]}],
        "birthright_policies": [
            {"name": "finance-reads", "groups": ["finance", "security"], "roles": ["reports/warehouse/read"]}
        ],
    }
    reloaded = await api.ok(ADMIN, "POST", "/api/org", changed)
    second = audit("org")[-1]
    assert second.details["sha256"] == reloaded["sha256"] == _canonical_sha256(changed) != first.details["sha256"]
    assert second.details["changes"] == {
        "users": {
            "admins_added": ["zoe@example.com"],
            "deactivated": ["ken@example.com"],
            "groups_changed": ["ken@example.com"],
        },
        "approval_workflows": {"created": ["night"]},
        "birthright_policies": {"updated": ["finance-reads"]},
    }


async def test_someone_not_an_admin_is_refused_and_nothing_is_stored(api: Api, settings: Settings) -> None:
    before = _stored(settings)
    problem(await api.call("alan@example.com", "POST", "/api/org", PG_REPORTS), 403)
    problem(await api.call("alan@example.com", "GET", "/api/org/open-references"), 403)
    assert _stored(settings) == before


async def test_a_non_admin_learns_nothing_of_the_files_shape(api: Api) -> None:
    """The caller is refused before the body is read: an invalid file is a 403 for a non-admin, not a 422 that
    names the schema's fields."""
    invalid = {"users": [{"email": "zoe@example.com", "nickname": "z"}], "nosuch": 1}
    response = await api.call("alan@example.com", "POST", "/api/org", invalid)
    assert problem(response, 403) == "only admins can do this"
    assert "errors" not in response.json() and "nickname" not in response.text


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
        # The API's own bounds on the same things (its name patterns, field lengths, list sizes).
        ({"integrations": [{"name": "big name " * 333}]}, "integrations.0.name", "should match pattern"),
        ({"integrations": [{"name": "Reports"}]}, "integrations.0.name", "should match pattern"),
        ({"birthright_policies": [{"name": "p" * 3000, "groups": ["finance"], "roles": ["reports/warehouse/read"]}]},
         "birthright_policies.0.name", "should match pattern"),
        ({"birthright_policies": [{"name": "p", "groups": ["g" * 3000], "roles": ["reports/warehouse/read"]}]},
         "birthright_policies.0.groups.0", "at most 200 characters"),
        ({"birthright_policies": [{"name": "p", "groups": ["finance"], "roles": ["r/" * 300]}]},
         "birthright_policies.0.roles.0", "at most 400 characters"),
        ({"birthright_policies": [{"name": "p", "groups": ["finance"] * 501, "roles": ["reports/warehouse/read"]}]},
         "birthright_policies.0.groups", "at most 500 items"),
        ({"users": [{"email": "z" * 400 + "@example.com"}]}, "users.0.email", "at most 320 characters"),
        ({"users": [{"email": "zoe@example.com", "groups": ["finance"] * 501}]}, "users.0.groups", "at most 500 items"),
        ({"groups": [{"name": "g", "description": "x" * 2001}]}, "groups.0.description", "at most 2000 characters"),
        ({"integrations": [{"name": "x", "resources": [{"name": "r", "roles": [{"name": "a\tb"}]}]}]},
         "integrations.0.resources.0.roles.0.name", "contains a tab or a newline"),
        ({"assignments": [{"workflow": "w" * 201, "scope": "reports"}]}, "assignments.0.workflow", "at most 200"),
        ({"approval_workflows": [{"name": "x", "rules": [{"name": "r", "max_duration": "PT1H",
                                                          "when": {"groups": ["g" * 3000]}}]}]},
         "approval_workflows.0", "rules.0.when.groups.0 is 3000 characters long; at most 200 are allowed"),
        ({"users": [{"email": f"u{i}@example.com"} for i in range(20_001)]},
         "users", "lists 20001 users; one file may list at most 20000"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
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
    big = {"groups": [{"name": f"big-{i}", "description": "x" * 1000} for i in range(100)]}
    assert (await api.ok(ADMIN, "POST", "/api/org", big))["loaded"]["groups"] == 100
    problem(await api.call(ADMIN, "POST", "/api/requests", {"justification": "x" * 100_000}), 413, "body")


async def test_an_organisation_file_over_1_mib_is_a_413_before_it_is_read(api: Api, settings: Settings) -> None:
    """It is stored in one transaction, holding the app DB's write lock: its size is bounded, and only its route
    reads more than other bodies."""
    before = _stored(settings)
    over = {"groups": [{"name": f"g{i}", "description": "x" * 1000} for i in range(1100)]}
    assert len(json.dumps(over)) > 1024 * 1024
    assert "1048576" in problem(await api.call(ADMIN, "POST", "/api/org", over), 413, "body")
    assert _stored(settings) == before
    # Another path under /api/org reads no more than any other body.
    response = await api.call(ADMIN, "POST", "/api/org/open-references", {"x": "y" * (2 * MAX_BODY_BYTES)})
    assert str(MAX_BODY_BYTES) in problem(response, 413, "body")


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
    assert [(o["kind"], o["reference"], o["state"], o["waits_for"]) for o in loaded["open_references"]] == [
        ("group", "corp:dbusers", "waiting", "corp"),
        ("role", "pg/app/app_read", "waiting", "pg"),
    ]
    # The discovery failed: it is not said to have run, and the load is not wholly applied.
    assert loaded["started"] == ["directory-sync", "birthright-sync"] and loaded["failed"] == ["discovery-pg"]
    assert not loaded["applied"] and "discovery of pg failed" in loaded["notes"][0]
    still_open = await api.ok(ADMIN, "GET", "/api/org/open-references")
    assert [(o["policy"], o["state"], o["why"]) for o in still_open] == [
        ("db", "waiting", "unknown group corp:dbusers: waits for the first directory sync of corp"),
        ("db", "waiting", "unknown role pg/app/app_read: waits for the first discovery of pg"),
    ]

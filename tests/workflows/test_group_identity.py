"""Finding 9: groups are identified by source and external id, never merged by name.

A directory group created under the directory's base with an organisation file group's name (``security``,
``oncall-platform``) is a group of its own: its members are not approvers, not on call and get no birthright
roles of the file's group. Policies reach a directory's group only by naming it (``corp:security`` or
``corp:#<entryUUID>``), and a reference that becomes ambiguous later names nobody instead of a merge.
Against the real slapd the suite starts and the real Temporal dev server, through the API.
"""

from __future__ import annotations

from starter.services.org import checked_connector
from store import catalog
from store.db import session_scope
from store.org import OrgFile
from store.org_load import load_org
from store.settings import Settings
from tests.conftest import Api
from tests.workflows.test_birthright_sync import birthright_grants, create_policy, sync_now
from tests.workflows.test_directory_sync import (  # noqa: F401  (fixtures)
    Directory,
    directory,
    run_sync,
    settings_overrides,
    syncs,
)

ADMIN, RADIA, ALAN, BARBARA = "ada@example.com", "radia@example.com", "alan@example.com", "barbara@example.com"
KEN, DENNIS, MARGARET = "ken@example.com", "dennis@example.com", "margaret@example.com"
FRANCES = "frances@example.com"  # owns the prod-db roles
WRITE = "ledger/prod-db/write"  # sensitive: on call -> a peer of oncall-platform; else manager, then an owner
ADMIN_ROLE = "ledger/prod-db/admin"  # critical: manager, then 2 of {owners, security}
READ = "ledger/prod-db/read"


def groups_of(settings: Settings, email: str) -> list[str]:
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
        assert user is not None
        return catalog.groups_of(session, user)


async def test_f9_a_directory_group_named_like_an_org_group_grants_nothing(
    api: Api,
    directory: Directory,  # noqa: F811
    settings: Settings,
) -> None:
    for uid in ("margaret", "ken", "dennis"):
        directory.add_user(uid, manager=None if uid == "margaret" else "margaret")
    # Whoever may create entries under the directory's base makes groups with the organisation's names.
    directory.add_group("oncall-platform", ["ken", "dennis"])
    directory.add_group("security", ["ken", "dennis"])
    await run_sync(api)

    # Two groups each: the file's and the directory's, told apart by source.
    corp = directory.name
    assert groups_of(settings, KEN) == [f"{corp}:oncall-platform", f"{corp}:security", "engineering", "payments"]
    assert groups_of(settings, ALAN) == ["engineering", "oncall-platform", "platform"]  # the file's, untouched

    # Not on call: ken gets the rule for everyone else, and is no on-call peer of alan.
    ken = await api.request(KEN, WRITE, "PT1H", "incident")
    steps = [step["eligible"] for step in ken["steps"]]
    assert (ken["rule"], steps) == ("manager then owner", [[MARGARET], [FRANCES]])
    alan = await api.request(ALAN, WRITE, "PT1H", "incident")
    assert (alan["rule"], alan["steps"][0]["eligible"]) == ("on-call", [BARBARA])
    # Not security: the critical rule's second step is the role's owners and the file's security team only.
    critical = await api.request(ALAN, ADMIN_ROLE, "PT1H", "migration")
    assert critical["steps"][1]["eligible"] == [ADMIN, FRANCES, RADIA]

    # No birthright roles of the file's security group.
    await create_policy(api, "security-baseline", ["security"], [READ])
    assert birthright_grants(settings, READ) == {ADMIN: "security-baseline", RADIA: "security-baseline"}

    # Named by source, the directory's group is reachable (and only then).
    await create_policy(api, "corp-security", [f"{corp}:security"], [READ])
    assert birthright_grants(settings, READ) == {
        ADMIN: "security-baseline",
        RADIA: "security-baseline",
        KEN: "corp-security",
        DENNIS: "corp-security",
    }


async def test_a_namesake_in_the_same_directory_makes_the_reference_ambiguous_never_merged(
    api: Api,
    directory: Directory,  # noqa: F811
    settings: Settings,
) -> None:
    directory.add_user("ken")
    directory.add_user("dennis")
    directory.add_group("dbas", ["ken"])
    await run_sync(api)
    corp = directory.name
    (listed,) = await api.ok(ADMIN, "GET", "/api/directory/groups", source=corp, name="dbas")
    assert (listed["members"], listed["namesakes"]) == (1, 0)
    exact = listed["reference"]
    assert exact.startswith(f"{corp}:#") and exact != f"{corp}:#dbas"  # the entryUUID

    await create_policy(api, "dbas-by-name", [f"{corp}:dbas"], [READ])
    await create_policy(api, "dbas-exact", [exact], ["ledger/payments-api/read"])
    assert birthright_grants(settings, READ) == {KEN: "dbas-by-name"}

    # Another `dbas`, in an OU of its own under the groups base, with dennis in it.
    sub = f"ou=elsewhere,{directory.groups}"
    with directory.server.admin() as connection:
        connection.add(sub, ["organizationalUnit"], {"ou": "elsewhere"})
    directory.server.add_group("dbas", [directory.dn("dennis")], base=sub)
    await run_sync(api)

    # Refused when saved, naming the field and the way out...
    body = {"name": "dbas-again", "groups": [f"{corp}:dbas"], "roles": [READ]}
    response = await api.call(ADMIN, "POST", "/api/birthright/policies", body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "groups", problem
    assert "ambiguous" in problem["detail"] and exact in problem["detail"], problem
    # ... and a stored policy naming it by name grants nobody now (fail closed), while the exact one holds.
    await sync_now(api)
    assert birthright_grants(settings, READ) == {}
    assert birthright_grants(settings, "ledger/payments-api/read") == {KEN: "dbas-exact"}


async def test_an_approval_workflow_reaches_a_directory_group_only_by_naming_its_source(
    api: Api,
    directory: Directory,  # noqa: F811
    settings: Settings,
) -> None:
    directory.add_user("ken")
    directory.add_user("dennis")
    directory.add_group("oncall-platform", ["ken", "dennis"])
    await run_sync(api)
    corp = directory.name
    rotation = f"{corp}:oncall-platform"
    sensitive = {
        "name": "sensitive",
        "rules": [
            {
                "name": "on-call",
                "when": {"on_call": [rotation]},
                "steps": [{"name": "on-call peer", "approvers": [{"kind": "group", "name": rotation}]}],
                "max_duration": "PT4H",
            },
            {"name": "others", "steps": [{"approvers": [{"kind": "manager"}]}], "max_duration": "PT8H"},
        ],
    }
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.model_validate({"approval_workflows": [sensitive]}), connectors=checked_connector)
    ken = await api.request(KEN, WRITE, "PT1H", "incident")
    assert (ken["rule"], ken["steps"][0]["eligible"]) == ("on-call", [DENNIS])
    alan = await api.request(ALAN, WRITE, "PT1H", "incident")  # in the file's rotation, not the directory's
    assert alan["rule"] == "others"


def test_the_organisation_file_refuses_unknown_and_ambiguous_group_references(settings: Settings) -> None:
    """No LDAP needed: two directories' groups of one name, written straight into the app DB."""
    from store.org import OrgError
    from store.tables import Group

    with session_scope(settings.db_url) as session:
        session.add(Group(name="auditors", source="corp-a", external_id="uuid-a"))
        session.add(Group(name="auditors", source="corp-b", external_id="uuid-b"))
    rule = {"name": "r", "when": {"groups": ["auditors"]}, "max_duration": "PT1H"}
    for refs, expected in (
        (["auditors"], "group auditors is ambiguous"),
        (["corp-c:auditors"], "unknown group corp-c:auditors"),
        (["nope"], "unknown group nope"),
    ):
        rule["when"] = {"groups": refs}
        org = OrgFile.model_validate({"approval_workflows": [{"name": "w", "rules": [rule]}]})
        try:
            with session_scope(settings.db_url) as session:
                load_org(session, org, connectors=checked_connector)
        except OrgError as error:
            assert expected in str(error), str(error)
        else:
            raise AssertionError(f"{refs} was accepted")
    for refs in (["corp-a:auditors"], ["corp-b:#uuid-b"], ["security"]):
        rule["when"] = {"groups": refs}
        with session_scope(settings.db_url) as session:
            load_org(
                session,
                OrgFile.model_validate({"approval_workflows": [{"name": "w", "rules": [rule]}]}),
                connectors=checked_connector,
            )
    # The file's own group of that name wins over both, without ambiguity: the file is the admins'.
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.model_validate({"groups": [{"name": "auditors"}]}), connectors=checked_connector)
    rule["when"] = {"groups": ["auditors"]}
    with session_scope(settings.db_url) as session:
        load_org(
            session,
            OrgFile.model_validate({"approval_workflows": [{"name": "w", "rules": [rule]}]}),
            connectors=checked_connector,
        )

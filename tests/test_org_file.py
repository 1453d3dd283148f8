"""Loading organisation files: the demo, a later file that builds on it, bad references, and references a first
directory sync or discovery will resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from starter.services.org import checked_connector
from store import catalog
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgError, OrgFile, load_org
from store.tables import Integration, User

pytestmark = pytest.mark.every_app_db


@pytest.fixture
def db_url(app_db: str) -> str:
    migrate(app_db)
    with session_scope(app_db) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
    return app_db


def test_demo_loads_and_reloading_changes_nothing(db_url: str) -> None:
    with session_scope(db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
        assert len(session.exec(select(User)).all()) == 11
        alan = catalog.find_user(session, "Alan@Example.com")
        assert alan is not None and alan.manager_email == "linus@example.com"
        assert catalog.groups_of(session, alan) == ["engineering", "oncall-platform", "platform"]


def test_a_later_file_may_refer_to_what_is_already_loaded(db_url: str, tmp_path: Path) -> None:
    extra = tmp_path / "pg.yaml"
    extra.write_text(
        """
integrations:
  - name: pg-prod
    kind: postgres
    config: {dsn_env: LAPSE_PG_PROD_DSN}
    resources:
      - name: orders
        roles: [{name: orders_read, sensitivity: low, owners: [frances@example.com]}]
assignments:
  - {workflow: read-only, scope: pg-prod}
"""
    )
    with session_scope(db_url) as session:
        load_org(session, OrgFile.read(extra), connectors=checked_connector)
        integration = session.exec(select(Integration).where(Integration.name == "pg-prod")).one()
        assert integration.config == {"dsn_env": "LAPSE_PG_PROD_DSN"}
        role = catalog.find_role(session, "pg-prod/orders/orders_read")
        assert role is not None
        policy = catalog.policy_for(session, role)
        assert policy is not None and policy.name == "read-only"
        assert catalog.role_owners(session, role) == ["frances@example.com"]


def test_unknown_references_are_refused_with_every_problem_named(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
users:
  - {email: zed@example.com, manager: nobody@example.com, groups: [no-such-group]}
assignments:
  - {workflow: no-such-workflow, scope: ledger/nope}
"""
    )
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(bad), connectors=checked_connector)
    message = str(refused.value)
    for problem in ("manager nobody@example.com", "unknown group no-such-group", "no-such-workflow", "ledger/nope"):
        assert problem in message
    with session_scope(db_url, write=False) as session:
        assert catalog.find_user(session, "zed@example.com") is None  # nothing stored


def test_malformed_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("approval_workflows:\n  - {name: x, rules: [{name: r, max_duration: soon}]}\n")
    with pytest.raises(OrgError, match="max_duration"):
        OrgFile.read(bad)


def test_birthright_policies_load_in_order_idempotently_and_unknown_references_are_refused(
    db_url: str, tmp_path: Path
) -> None:
    from sqlmodel import col

    from store.tables import BirthrightPolicy

    path = tmp_path / "birthright.yaml"
    path.write_text(
        """
birthright_policies:
  - {name: engineering, groups: [engineering], roles: [ledger/payments-api/read]}
  - {name: finance, groups: [finance], roles: [ledger/billing-reports/viewer], description: reports}
"""
    )
    for _ in range(2):
        with session_scope(db_url) as session:
            load_org(session, OrgFile.read(path), connectors=checked_connector)
    with session_scope(db_url, write=False) as session:
        policies = session.exec(select(BirthrightPolicy).order_by(col(BirthrightPolicy.position))).all()
        assert [(p.name, p.position, p.groups, p.description) for p in policies] == [
            ("engineering", 0, ["engineering"], ""),
            ("finance", 1, ["finance"], "reports"),
        ]

    path.write_text(
        """
birthright_policies:
  - {name: bad, groups: [nope], roles: [ledger/nope/x]}
"""
    )
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(path), connectors=checked_connector)
    assert "birthright policy bad: unknown group nope" in str(refused.value)
    assert "birthright policy bad: unknown role ledger/nope/x" in str(refused.value)


def test_the_readmes_organisation_file_examples_are_valid() -> None:
    """Every YAML example in the README parses as an organisation file, connector settings included."""
    import re

    import yaml

    from activities.connectors import check_config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        org = OrgFile.model_validate(yaml.safe_load(block))
        for integration in org.integrations:
            check_config(integration.kind, integration.config)


def test_a_birthright_policy_cannot_use_a_login_per_grant(db_url: str, tmp_path: Path) -> None:
    """Ephemeral credentials end with their grant; birthright access has none, so the file is refused whole."""
    org = tmp_path / "eph.yaml"
    org.write_text(
        """
integrations:
  - name: pg-eph
    kind: postgres
    config: {dsn_env: LAPSE_PG_EPH_DSN, ephemeral: true}
    resources: [{name: db, roles: [{name: reader}]}]
birthright_policies:
  - {name: eng-reads, groups: [engineering], roles: [pg-eph/db/reader]}
"""
    )
    with pytest.raises(OrgError, match="pg-eph, which makes a login per grant"), session_scope(db_url) as session:
        load_org(session, OrgFile.read(org), connectors=checked_connector)
    with session_scope(db_url, write=False) as session:
        assert session.exec(select(Integration).where(Integration.name == "pg-eph")).first() is None


ONE_GO = """
integrations:
  - name: corp
    kind: ldap
    directory: true
    config: {url: "ldaps://dc1.example.com:636", bind_dn: "cn=lapse,dc=corp", password_env: LAPSE_LDAP_PASSWORD,
             users_base: "ou=people,dc=corp", groups_base: "ou=groups,dc=corp"}
  - name: pg
    kind: postgres
    config: {dsn_env: LAPSE_PG_DSN}
birthright_policies:
  - {name: db-baseline, groups: [dbusers, "corp:admins"], roles: [pg/app/app_read]}
"""


def test_a_directory_an_integration_and_a_policy_over_them_load_in_one_go(db_url: str, tmp_path: Path) -> None:
    """The policy's groups wait for the directory's first sync and its role for the first discovery: it is
    stored, grants nothing through them, and they are listed as open until those runs bring them."""
    from store.org_check import open_references
    from store.tables import BirthrightPolicy, Group, Resource, Role

    org = tmp_path / "one-go.yaml"
    org.write_text(ONE_GO)
    with session_scope(db_url) as session:
        opened = load_org(session, OrgFile.read(org), connectors=checked_connector)
    assert [(o.kind, o.reference, o.why) for o in opened] == [
        ("group", "dbusers", "unknown group dbusers: waits for the first directory sync of corp"),
        ("group", "corp:admins", "unknown group corp:admins: waits for the first directory sync of corp"),
        ("role", "pg/app/app_read", "unknown role pg/app/app_read: waits for the first discovery of pg"),
    ]
    with session_scope(db_url) as session:
        assert session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == "db-baseline")).one()
        assert [o.reference for o in open_references(session)] == ["dbusers", "corp:admins", "pg/app/app_read"]
        # What the directory sync and discovery would bring:
        session.add(Group(source="corp", name="dbusers", external_id="5f0c-1"))
        session.add(Group(source="corp", name="admins", external_id="5f0c-2"))
        pg = session.exec(select(Integration).where(Integration.name == "pg")).one()
        resource = Resource(integration_id=pg.id or 0, name="app")
        session.add(resource)
        session.flush()
        session.add(Role(resource_id=resource.id or 0, name="app_read", path="pg/app/app_read"))
        pg.discovered_at = datetime.now(UTC)
        session.add(pg)
    with session_scope(db_url) as session:
        assert open_references(session) == []
        assert load_org(session, OrgFile.read(org), connectors=checked_connector) == []  # resolved now

    # Once the directory has synced and the integration been discovered, a typo is refused, not left open.
    org.write_text(ONE_GO.replace("[dbusers,", "[dbuser,").replace("pg/app/app_read", "pg/app/app_reed"))
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(org), connectors=checked_connector)
    assert "birthright policy db-baseline: unknown group dbuser" in str(refused.value)
    assert "birthright policy db-baseline: unknown role pg/app/app_reed" in str(refused.value)


def test_what_cannot_wait_for_a_first_sync_says_what_to_run_first(db_url: str, tmp_path: Path) -> None:
    """An approval workflow's groups (an unknown one would route requests to another rule) and an assignment to a
    resource (stored by id) are refused before the first sync, saying what to run; each problem names its field."""
    org = tmp_path / "early.yaml"
    org.write_text(
        ONE_GO
        + """
approval_workflows:
  - name: dbas
    rules: [{name: r, max_duration: PT1H, steps: [{approvers: [{kind: group, name: "corp:dbas"}]}]}]
assignments:
  - {workflow: dbas, scope: pg/app}
"""
    )
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(org), connectors=checked_connector)
    problems = {p.field: p.message for p in refused.value.problems}
    assert problems == {
        "approval_workflows.0.rules.0.steps.0.approvers.0.name": "workflow dbas: unknown group corp:dbas (corp has "
        "not synced yet: approval workflows wait for it — load the file without them, run `lapse directory sync`, "
        "then load it whole)",
        "assignments.0.scope": "assignment: unknown scope pg/app (pg's resources and roles come from its discovery: "
        "assign the integration itself (scope: pg), or load the file without this assignment, run "
        "`lapse integrations discover pg`, then load it whole)",
    }
    with session_scope(db_url, write=False) as session:
        assert session.exec(select(Integration).where(Integration.name == "corp")).first() is None  # nothing stored


def test_every_problem_names_its_place_in_the_file(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
users:
  - {email: zed@example.com, manager: nobody@example.com}
integrations:
  - {name: x, kind: nosuch}
  - {name: y, kind: scim, config: {base_url: "https://scim.example.com/v2", token_file: /etc/passwd}}
assignments:
  - {workflow: no-such-workflow, scope: ledger}
"""
    )
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(bad), connectors=checked_connector)
    fields = [p.field for p in refused.value.problems]
    assert fields == [
        "users.0.manager",
        "integrations.0.kind",
        "integrations.1.config.token_file",
        "assignments.0.workflow",
    ]
    assert "integration x: unknown integration kind 'nosuch'" in str(refused.value)

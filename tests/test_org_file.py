"""Loading organisation files: the demo, a later file that builds on it, bad references, and references a first
directory sync or discovery will resolve."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from starter.services.org import checked_connector
from store import catalog
from store.audit_log import configure_audit
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgError, OrgFile
from store.org_load import load_org
from store.org_open import open_references
from store.settings import Settings
from store.tables import Integration, User

pytestmark = pytest.mark.every_app_db


@pytest.fixture
def db_url(app_db: str, tmp_path: Path) -> str:
    migrate(app_db)
    # Its own audit chain (a directory sync audits), its key in the test's directory.
    configure_audit(Settings(data_dir=tmp_path, database_url=app_db, _env_file=None))  # type: ignore[call-arg]
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
        if block.startswith("display_information:"):  # the Slack app's manifest, not an organisation file
            continue
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
    from store.tables import BirthrightPolicy, Group, Resource, Role

    org = tmp_path / "one-go.yaml"
    org.write_text(ONE_GO)
    with session_scope(db_url) as session:
        opened = load_org(session, OrgFile.read(org), connectors=checked_connector)
    assert [(o.kind, o.reference, o.why, o.waits_for) for o in opened] == [
        (
            "group",
            "corp:dbusers",
            "unknown group corp:dbusers (given as dbusers, stored qualified with corp, the one directory not synced "
            "yet): waits for the first directory sync of corp",
            "corp",
        ),
        ("group", "corp:admins", "unknown group corp:admins: waits for the first directory sync of corp", "corp"),
        ("role", "pg/app/app_read", "unknown role pg/app/app_read: waits for the first discovery of pg", "pg"),
    ]
    assert opened[0].given == "dbusers"
    with session_scope(db_url) as session:
        policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == "db-baseline")).one()
        assert policy.groups == ["corp:dbusers", "corp:admins"]  # never bare: no other source can answer to it
        assert [o.reference for o in open_references(session)] == ["corp:dbusers", "corp:admins", "pg/app/app_read"]
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


# --- open group references are tied to the directory they wait for (review finding 5) -------------------

CORP = {
    "name": "corp",
    "kind": "ldap",
    "directory": True,
    "config": {
        "url": "ldaps://dc1.example.com:636",
        "bind_dn": "cn=lapse,dc=corp",
        "password_env": "LAPSE_LDAP_PASSWORD",
        "users_base": "ou=people,dc=corp",
        "groups_base": "ou=groups,dc=corp",
    },
}
READ = "ledger/prod-db/read"


def _directory(name: str) -> dict[str, Any]:
    return CORP | {"name": name}


def _policy(*groups: str, role: str = READ) -> dict[str, Any]:
    return {"birthright_policies": [{"name": "db", "groups": list(groups), "roles": [role]}]}


def _synced(db_url: str, **sources: dict[str, tuple[str, ...]]) -> None:
    """One directory sync run reading these sources (each one's groups by name, with their members' emails), as
    it would read the directory integrations."""
    from activities.connectors.ldap_directory import DirectoryGroup, DirectorySnapshot, DirectoryUser
    from activities.directory import _sync
    from activities.directory_sources import Source

    read = []
    for source, groups in sources.items():
        emails = sorted({email for members in groups.values() for email in members})
        snapshot = DirectorySnapshot(
            users=tuple(DirectoryUser(f"uid={e}", e, e, None, False, external_id=f"{source}-{e}") for e in emails),
            groups=tuple(DirectoryGroup(f"cn={n}", n, "", m, external_id=f"{source}-{n}") for n, m in groups.items()),
        )
        read.append(Source(source, snapshot, complete=True))
    with session_scope(db_url) as session:
        _sync(session, read, "the test", datetime.now(UTC))


@pytest.fixture
def audited(db_url: str) -> Callable[[str], list[Any]]:
    """The audit events of one action."""
    from store.tables import AuditEvent

    def read(action: str) -> list[Any]:
        with session_scope(db_url, write=False) as session:
            return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)))

    return read


def test_a_bare_group_left_open_cannot_grant_through_another_directorys_namesake(db_url: str) -> None:
    """A bare ``dbusers`` waiting for corp is stored as ``corp:dbusers``: when another directory brings a
    ``dbusers`` and corp has none, the policy grants its role to nobody — not to the other source's group."""
    with session_scope(db_url) as session:
        opened = load_org(
            session, OrgFile.model_validate({"integrations": [CORP]} | _policy("dbusers")), connectors=checked_connector
        )
    _synced(db_url, corp={"developers": ("zoe@example.com",)})
    # Later, a second directory arrives with a group of that name, whose members are the demo's.
    with session_scope(db_url) as session:
        load_org(session, OrgFile.model_validate({"integrations": [_directory("hr")]}), connectors=checked_connector)
    _synced(db_url, corp={"developers": ("zoe@example.com",)}, hr={"dbusers": ("alan@example.com", "ken@example.com")})
    with session_scope(db_url, write=False) as session:
        plan = catalog.birthright_inputs(session).plan()
        assert [(item.user, item.role) for item in plan.add if item.policy == "db"] == []
        [still] = open_references(session)
    assert [(o.reference, o.given, o.waits_for) for o in opened] == [("corp:dbusers", "dbusers", "corp")]
    assert (still.reference, still.waits_for) == ("corp:dbusers", None)
    assert still.why == "unknown group corp:dbusers: corp has synced and has no such group; fix the policy"


def test_a_bare_group_is_refused_unless_exactly_one_directory_is_yet_to_sync(db_url: str) -> None:
    two = {"integrations": [CORP, _directory("hr")]} | _policy("dbusers")
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.model_validate(two), connectors=checked_connector)
    [problem] = refused.value.problems
    assert problem.field == "birthright_policies.0.groups"
    assert problem.message == (
        "birthright policy db: unknown group dbusers: corp, hr have not synced yet; name the directory it is to "
        "come from (corp:dbusers or hr:dbusers)"
    )
    with session_scope(db_url) as session:  # qualified, it waits for the directory it names
        opened = load_org(
            session, OrgFile.model_validate(two | _policy("hr:dbusers", "corp:#5f0c")), connectors=checked_connector
        )
    assert [(o.reference, o.waits_for, o.given) for o in opened] == [
        ("hr:dbusers", "hr", None),
        ("corp:#5f0c", "corp", None),
    ]
    # No directory left to sync: an unknown bare name is a plain unknown group.
    _synced(db_url, corp={}, hr={})
    with (
        pytest.raises(OrgError, match=r"birthright policy db: unknown group dbusers$"),
        session_scope(db_url) as session,
    ):
        load_org(session, OrgFile.model_validate(_policy("dbusers")), connectors=checked_connector)


def test_a_typo_waiting_for_a_directory_is_unresolved_and_audited_after_its_sync(
    db_url: str, audited: Callable[[str], list[Any]]
) -> None:
    file = OrgFile.model_validate({"integrations": [CORP]} | _policy("corp:dbusrs", "corp:dbusers"))
    with session_scope(db_url) as session:
        opened = load_org(session, file, connectors=checked_connector)
    _synced(db_url, corp={"dbusers": ("zoe@example.com",)})
    [event] = audited("org.references_unresolved")
    assert event.actor == "lapse" and "after the first directory sync of corp" in event.reason
    assert [r["reference"] for r in event.details["references"]] == ["corp:dbusrs"]
    with session_scope(db_url, write=False) as session:
        [typo] = open_references(session)
    assert [(o.reference, o.waits_for) for o in opened] == [("corp:dbusrs", "corp"), ("corp:dbusers", "corp")]
    assert (typo.reference, typo.waits_for) == ("corp:dbusrs", None)
    assert "corp has synced and has no such group" in typo.why
    _synced(db_url, corp={"dbusers": ("zoe@example.com",)})  # only the run it waited for says so
    assert len(audited("org.references_unresolved")) == 1


def test_a_typo_waiting_for_a_discovery_is_unresolved_and_audited_after_it(
    db_url: str, audited: Callable[[str], list[Any]]
) -> None:
    from temporalio.testing import ActivityEnvironment

    from access.connectors import DiscoveredRole, Discovery
    from access.discovery import IntegrationInput
    from activities.discovery import DiscoveryActivities
    from tests.conftest import FakeTarget

    class Discovers(FakeTarget):
        discovers = True

        def discover(self) -> Discovery:
            return Discovery(resources={"app": ""}, roles=[DiscoveredRole("app", "app_read")])

    pg = {"name": "pg", "kind": "postgres", "config": {"dsn_env": "LAPSE_PG_DSN"}}
    file = {
        "integrations": [pg],
        "birthright_policies": [
            {"name": "db", "groups": ["engineering"], "roles": ["pg/app/app_read", "pg/app/app_reed"]}
        ],
    }
    with session_scope(db_url) as session:
        opened = load_org(session, OrgFile.model_validate(file), connectors=checked_connector)
    activities = DiscoveryActivities(db_url, connectors={"postgres": Discovers().connector})
    ActivityEnvironment().run(activities.discover_integration, IntegrationInput(integration="pg"))
    [event] = audited("org.references_unresolved")
    assert "after the first discovery of pg" in event.reason
    assert [r["reference"] for r in event.details["references"]] == ["pg/app/app_reed"]
    with session_scope(db_url, write=False) as session:
        [typo] = open_references(session, connectors=checked_connector)
    assert [o.waits_for for o in opened] == ["pg", "pg"]
    assert (typo.reference, typo.waits_for) == ("pg/app/app_reed", None)
    assert typo.why == "unknown role pg/app/app_reed: pg has been discovered and has no such role; fix the policy"


def test_loading_a_file_holds_the_lock_every_birthright_policy_change_holds(db_url: str) -> None:
    """Loading renumbers the birthright policies: it waits, as the birthright API's changes do, while another
    change holds their lock (an advisory lock on PostgreSQL; SQLite's one writer at a time does it there)."""
    import threading

    from starter.services.birthright import LOCK
    from store.db import lock

    file = OrgFile.model_validate(_policy("engineering"))
    loaded = threading.Event()

    def load() -> None:
        with session_scope(db_url) as session:
            load_org(session, file, connectors=checked_connector)
        loaded.set()

    loader = threading.Thread(target=load)
    with session_scope(db_url) as change:  # a birthright policy change under way
        lock(change, LOCK)
        loader.start()
        assert not loaded.wait(1.5), "the file was loaded while a birthright policy change held the lock"
    loader.join(timeout=30)
    assert loaded.is_set()

    from store.org_check import BIRTHRIGHT_LOCK

    assert BIRTHRIGHT_LOCK == LOCK  # one key: the store names it, the birthright service takes it


def test_a_files_names_and_sizes_are_bounded_as_the_api_bounds_them() -> None:
    """The same name patterns as the integrations and birthright APIs (one definition each side of the layers,
    pinned equal here), and every section bounded."""
    from pydantic import ValidationError

    from access.limits import MAX_NAME
    from starter.services import birthright, integrations
    from starter.services.fields import Name
    from store.org import INTEGRATION_NAME_PATTERN, LIMITS, MAX_ROLES, POLICY_NAME_PATTERN

    assert INTEGRATION_NAME_PATTERN == integrations.NAME_PATTERN
    assert POLICY_NAME_PATTERN == birthright.NAME_PATTERN
    assert Name.__metadata__[0].max_length == MAX_NAME  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as refused:
        OrgFile.model_validate({"integrations": [{"name": "a name with spaces " * 160}]})
    assert [e["loc"] for e in refused.value.errors()] == [("integrations", 0, "name")]
    resources = [{"name": f"r{r}", "roles": [{"name": f"{i}"} for i in range(500)]} for r in range(MAX_ROLES // 500)]
    resources.append({"name": "one-more", "roles": [{"name": "last"}]})
    with pytest.raises(ValidationError, match=f"integrations declare {MAX_ROLES + 1} roles; one file may declare"):
        OrgFile.model_validate({"integrations": [{"name": "x", "resources": resources}]})
    for section, limit in LIMITS.items():
        with pytest.raises(ValidationError) as too_many:
            OrgFile.model_validate({section: [{}] * (limit + 1)})
        [error] = too_many.value.errors()
        assert error["loc"] == (section,) and f"one file may list at most {limit}" in error["msg"]


def test_a_step_with_reminders_and_escalation_loads_and_its_plan_carries_them(db_url: str, tmp_path: Path) -> None:
    from datetime import timedelta

    from access.policy import evaluate_policy
    from access.types import Approver, ApproverKind

    org = tmp_path / "reminders.yaml"
    org.write_text(
        """
approval_workflows:
  - name: nagging
    rules:
      - name: manager, then security
        steps:
          - name: manager
            approvers: [{kind: manager}]
            remind_after: PT1H
            remind_every: PT4H
            escalate_after: PT8H
            escalate_to: [{kind: group, name: security}, {kind: user, name: Frances@example.com}]
        max_duration: PT8H
assignments:
  - {workflow: nagging, scope: ledger/payments-api}
"""
    )
    with session_scope(db_url) as session:
        load_org(session, OrgFile.read(org), connectors=checked_connector)
        role = catalog.find_role(session, "ledger/payments-api/deploy")
        alan = catalog.find_user(session, "alan@example.com")
        assert role is not None and alan is not None
        policy = catalog.policy_for(session, role)
        context = catalog.policy_context(session, alan, role, policy)
    plan = evaluate_policy(policy, context, duration=timedelta(hours=1), justification="hotfix")
    [step] = plan.steps
    assert (step.remind_after, step.remind_every, step.escalate_after) == (
        timedelta(hours=1),
        timedelta(hours=4),
        timedelta(hours=8),
    )
    assert step.escalate_to == [
        Approver(kind=ApproverKind.GROUP, name="security"),
        Approver(kind=ApproverKind.USER, name="frances@example.com"),
    ]
    # The escalation resolves its group when the step escalates: the policy's context knows its members.
    assert context.group_members["security"]


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ("{approvers: [{kind: manager}], remind_every: PT30S}", "reminders must be at least PT1M apart"),
        ("{approvers: [{kind: manager}], escalate_after: PT8H}", "escalate_after needs escalate_to"),
        ("{approvers: [{kind: manager}], escalate_to: [{kind: manager}]}", "escalate_to needs escalate_after"),
        ("{approvers: [{kind: manager}], remind_after: PT0S}", "remind_after"),
    ],
)
def test_a_steps_reminders_and_escalation_are_checked(tmp_path: Path, step: str, problem: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"approval_workflows:\n  - {{name: x, rules: [{{name: r, max_duration: PT1H, steps: [{step}]}}]}}\n")
    with pytest.raises(OrgError, match=problem):
        OrgFile.read(bad)


def test_an_unknown_approver_to_escalate_to_is_named_in_its_place(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
approval_workflows:
  - name: nagging
    rules:
      - name: r
        max_duration: PT1H
        steps:
          - approvers: [{kind: manager}]
            escalate_after: PT1H
            escalate_to: [{kind: user, name: nobody@example.com}]
"""
    )
    with pytest.raises(OrgError) as refused, session_scope(db_url) as session:
        load_org(session, OrgFile.read(bad), connectors=checked_connector)
    [problem] = refused.value.problems
    assert problem.field == "approval_workflows.0.rules.0.steps.0.escalate_to.0.name"
    assert problem.message == "workflow nagging: unknown user nobody@example.com"

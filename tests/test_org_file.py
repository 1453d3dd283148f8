"""Loading organisation files: the demo, a later file that builds on it, and bad references."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from store import catalog
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgError, OrgFile, load_org
from store.tables import Integration, User

pytestmark = pytest.mark.every_app_db


@pytest.fixture
def db_url(app_db: str) -> str:
    migrate(app_db)
    with session_scope(app_db) as session:
        load_org(session, OrgFile.read(DEMO_ORG))
    return app_db


def test_demo_loads_and_reloading_changes_nothing(db_url: str) -> None:
    with session_scope(db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG))
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
        load_org(session, OrgFile.read(extra))
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
        load_org(session, OrgFile.read(bad))
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


def test_lapse_load_org_command_loads_a_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    lapse = str(Path(sys.executable).parent / "lapse")
    env = {**os.environ, "LAPSE_DATA_DIR": str(tmp_path), "LAPSE_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    loaded = subprocess.run([lapse, "load-org", str(DEMO_ORG)], env=env, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert "Temporal is not reachable" in loaded.stdout  # loaded all the same; schedules follow later
    with session_scope(f"sqlite:///{tmp_path / 'lapse.db'}", write=False) as session:
        assert catalog.find_user(session, "ada@example.com") is not None

    bad = tmp_path / "bad.yaml"
    bad.write_text("assignments:\n  - {workflow: nope, scope: ledger}\n")
    refused = subprocess.run([lapse, "load-org", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "unknown workflow nope" in refused.stderr


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
            load_org(session, OrgFile.read(path))
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
        load_org(session, OrgFile.read(path))
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
        load_org(session, OrgFile.read(org))
    with session_scope(db_url, write=False) as session:
        assert session.exec(select(Integration).where(Integration.name == "pg-eph")).first() is None

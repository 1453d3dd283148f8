"""The directory sync reads each user's department from a real slapd (the attribute the integration names), keeps
it in step when the directory changes it, and asks the directory for AD's ``department`` by default without
tripping on a directory that has no such attribute."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import ldap3  # type: ignore[import-untyped]
import pytest
from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from access.syncs import SyncInput
from activities.directory import DirectoryActivities
from harness.ldap import LdapServer
from store.db import session_scope
from store.settings import Settings
from store.tables import User
from tests.conftest import load_into, make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1")


def directory(settings: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch, **config: Any) -> str:
    """An OU of this test's own and an integration marked as the directory reading it; its people's base DN."""
    suffix = uuid.uuid4().hex[:6]
    people, groups = server.add_ou(f"people-{suffix}"), server.add_ou(f"groups-{suffix}")
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", server.admin_password)
    settings_of_directory = {
        "url": server.url,
        "bind_dn": server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "insecure": True,  # the test's slapd is plain ldap:// on loopback
        "users_base": people,
        "groups_base": groups,
        **config,
    }
    entry = {"name": f"corp-{suffix}", "kind": "ldap", "config": settings_of_directory, "directory": True}
    load_into(settings, {"integrations": [entry]})
    return people


def set_department(server: LdapServer, dn: str, value: str) -> None:
    with server.admin() as connection:
        connection.modify(dn, {"departmentNumber": [(ldap3.MODIFY_REPLACE, [value])]})


def sync(settings: Settings) -> None:
    ActivityEnvironment().run(DirectoryActivities(settings.db_url).sync_directory, SyncInput(reason="test"))


def departments(settings: Settings, *emails: str) -> dict[str, str | None]:
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(User.email, User.department).where(User.email.in_(emails)))  # type: ignore[attr-defined]
        return dict(rows.all())


def test_the_directory_sync_picks_up_each_users_department_and_its_changes(
    settings: Settings, ldap_server: LdapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenLDAP's inetOrgPerson has no AD ``department``: this directory keeps it in ``departmentNumber``.
    people = directory(settings, ldap_server, monkeypatch, department_attribute="departmentNumber")
    tag = people.split(",")[0].removeprefix("ou=people-")
    joiner, alan = f"dept-{tag}@example.com", "alan@example.com"
    joiner_dn = ldap_server.add_user(f"dept-{tag}", base=people, email=joiner, name="New Joiner")
    alan_dn = ldap_server.add_user("alan", base=people, email=alan, name="Alan Turing")
    ldap_server.add_user(f"quiet-{tag}", base=people, email=f"quiet-{tag}@example.com", name="No Department")
    set_department(ldap_server, joiner_dn, "Research")
    set_department(ldap_server, alan_dn, "Site Reliability")

    sync(settings)
    # A joiner gets theirs; alan (the demo file's, "Platform") takes the directory's, as his manager would.
    assert departments(settings, joiner, alan, f"quiet-{tag}@example.com") == {
        joiner: "Research",
        alan: "Site Reliability",
        f"quiet-{tag}@example.com": None,
    }

    set_department(ldap_server, alan_dn, "Security")  # a mover
    sync(settings)
    assert departments(settings, alan) == {alan: "Security"}


def test_a_directory_without_the_default_department_attribute_syncs_with_no_department(
    settings: Settings, ldap_server: LdapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = directory(settings, ldap_server, monkeypatch)  # department_attribute: department (AD's), not in slapd
    tag = people.split(",")[0].removeprefix("ou=people-")
    email = f"plain-{tag}@example.com"
    set_department(ldap_server, ldap_server.add_user(f"plain-{tag}", base=people, email=email), "ignored here")
    sync(settings)
    assert departments(settings, email) == {email: None}

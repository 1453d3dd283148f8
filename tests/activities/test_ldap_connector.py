"""The LDAP connector and identity source against a real slapd: membership changes, errors, paged reads.

What every connector promises (idempotence, error classes, discovery) is in test_connector_contract.py."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import ldap3  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from access.connectors import DiscoveredRole, HeldRole, PermanentError, Target
from activities.connectors.ldap import LdapConnector
from activities.connectors.ldap_directory import LdapDirectory
from harness.ldap import LdapServer

PASSWORD_ENV = "LAPSE_TEST_LDAP_PASSWORD"


@dataclass
class Setup:
    """A test's own users and groups OUs, two users, and a connector bound as the admin."""

    server: LdapServer
    people: str
    groups: str
    alan: str
    grace: str

    @cached_property
    def connector(self) -> LdapConnector:
        return LdapConnector(self.config())

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "url": self.server.url,
            "bind_dn": self.server.admin_dn,
            "password_env": PASSWORD_ENV,
            "users_base": self.people,
            "groups_base": self.groups,
            "insecure": True,  # the test's slapd listens on plain ldap:// (TLS has tests of its own)
            **overrides,
        }

    def target(self, role: str) -> Target:
        return Target(integration="ldap", resource="groups", role=role, config={})


@pytest.fixture
def setup(ldap_server: LdapServer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    alan = ldap_server.add_user(f"alan-{suffix}", base=people, email=f"Alan.{suffix}@example.com", name="Alan")
    grace = ldap_server.add_user(f"grace-{suffix}", base=people, email=f"grace.{suffix}@example.com", name="Grace")
    monkeypatch.setenv(PASSWORD_ENV, ldap_server.admin_password)
    return Setup(ldap_server, people, groups, alan, grace)


def test_revoke_removes_the_member_twice_is_fine_and_the_last_member_can_go(setup: Setup) -> None:
    group = setup.server.add_group("deployers", [setup.alan, setup.grace], base=setup.groups)
    setup.connector.revoke(setup.alan, setup.target("deployers"))
    setup.connector.revoke(setup.alan, setup.target("deployers"))
    assert setup.server.members(group) == {setup.grace.lower()}

    setup.connector.revoke(setup.grace, setup.target("deployers"))  # the last member
    assert setup.server.members(group) == {""}  # only the placeholder keeps the groupOfNames valid
    setup.connector.revoke(setup.grace, setup.target("deployers"))

    setup.connector.grant(setup.alan, setup.target("deployers"), None)
    assert setup.server.members(group) == {setup.alan.lower()}  # the placeholder gives way


def test_discover_lists_the_groups_with_their_descriptions(setup: Setup) -> None:
    setup.server.add_group("deployers", [setup.alan], base=setup.groups, description="May deploy to production")
    setup.server.add_group("auditors", [setup.grace], base=setup.groups)
    discovery = setup.connector.discover()
    assert discovery.resources == {"groups": f"LDAP groups under {setup.groups}"}
    assert discovery.roles == [
        DiscoveredRole(resource="groups", name="auditors", description=""),
        DiscoveredRole(resource="groups", name="deployers", description="May deploy to production"),
    ]


def test_list_grants_reports_members_with_emails_but_not_the_placeholder(setup: Setup) -> None:
    service = "cn=ci-bot,dc=example,dc=com"  # a member that is not a user under users_base
    setup.server.add_group("deployers", [setup.alan, service], base=setup.groups)
    setup.server.add_group("auditors", [setup.grace], base=setup.groups)
    setup.server.add_group("unrelated", [setup.grace], base=setup.groups)
    roles = [role for role in setup.connector.discover().roles if role.name != "unrelated"]

    held = set(setup.connector.list_grants(roles))
    alan_email, grace_email = _email(setup.alan), _email(setup.grace)
    assert held == {
        HeldRole(account=setup.alan, resource="groups", role="deployers", email=alan_email),
        HeldRole(account=service, resource="groups", role="deployers", email=None),
        HeldRole(account=setup.grace, resource="groups", role="auditors", email=grace_email),
    }
    assert setup.connector.account_for(alan_email) == setup.alan  # the same account string as list_grants

    setup.connector.revoke(setup.grace, setup.target("auditors"))
    assert {(h.role, h.account) for h in setup.connector.list_grants(roles)} == {
        ("deployers", setup.alan),
        ("deployers", service),
    }


def _email(dn: str) -> str:
    uid = dn.split(",", 1)[0].removeprefix("uid=")
    name, suffix = uid.split("-")
    return f"{name}.{suffix}@example.com"


def test_account_for_finds_the_dn_by_mail_and_names_an_unknown_email(setup: Setup) -> None:
    assert setup.connector.account_for(_email(setup.alan).upper()) == setup.alan
    with pytest.raises(PermanentError, match=re.escape("no LDAP user has mail=nobody@example.com under ou=people-")):
        setup.connector.account_for("nobody@example.com")
    with pytest.raises(PermanentError, match=r"mail=\*"):  # a filter metacharacter matches nobody, not everyone
        setup.connector.account_for("*")


def test_an_account_that_is_not_a_dn_is_a_permanent_error(setup: Setup) -> None:
    with pytest.raises(PermanentError, match="not an LDAP DN"):
        setup.connector.grant("alan", setup.target("no-such-group"), None)


def test_connection_test_names_a_base_that_does_not_exist(setup: Setup) -> None:
    missing_base = LdapConnector(setup.config(groups_base="ou=gone,dc=example,dc=com"))
    with pytest.raises(PermanentError, match="ou=gone,dc=example,dc=com does not exist"):
        missing_base.test_connection()


def test_a_bind_identity_without_write_access_is_a_permanent_error(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = setup.server.add_group("deployers", [setup.grace], base=setup.groups)
    monkeypatch.setenv(PASSWORD_ENV, setup.server.reader_password)
    reader = LdapConnector(setup.config(bind_dn=setup.server.reader_dn))
    with pytest.raises(PermanentError, match=f"LDAP change of {group} failed: insufficient access rights"):
        reader.grant(setup.alan, setup.target("deployers"), None)
    assert setup.server.members(group) == {setup.grace.lower()}


def test_configuration_is_checked_without_touching_the_server(setup: Setup) -> None:
    with pytest.raises(ValidationError, match="exactly one of password_env or password_file"):
        LdapConnector(setup.config(password_file="ldap-password"))
    with pytest.raises(ValidationError, match="ldap://host:port"):
        LdapConnector(setup.config(url="http://127.0.0.1:1"))
    with pytest.raises(ValidationError, match="extra"):
        LdapConnector(setup.config(password="in-the-config"))
    LdapConnector(setup.config(url="ldap://nowhere.invalid:389"))  # no I/O: building it only validates


def test_directory_reads_every_user_page_by_page_with_managers_and_disabled_flag(
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"staff-{suffix}"), ldap_server.add_ou(f"teams-{suffix}")
    boss = ldap_server.add_user("boss", base=people, email="Boss@Example.com", name="The Boss")
    staff = [
        ldap_server.add_user(f"u{n}", base=people, email=f"u{n}@example.com", manager=boss, disabled=n == 3)
        for n in range(4)
    ]
    ldap_server.add_user("nomail", base=people)  # not a person Lapse can know: left out
    ldap_server.add_group("team", [boss, *staff[:2], "cn=ci-bot,dc=example,dc=com"], base=groups, description="T")

    # The reader gets at most 2 entries from a search that does not page, like AD's 1,000.
    with ldap3.Connection(ldap_server.url, ldap_server.reader_dn, ldap_server.reader_password, auto_bind=True) as plain:
        plain.search(people, "(objectClass=inetOrgPerson)")
        assert (plain.result["description"], len(plain.response)) == ("sizeLimitExceeded", 2)

    monkeypatch.setenv(PASSWORD_ENV, ldap_server.reader_password)
    directory = LdapDirectory(
        {
            "url": ldap_server.url,
            "bind_dn": ldap_server.reader_dn,
            "password_env": PASSWORD_ENV,
            "users_base": people,
            "groups_base": groups,
            "insecure": True,
            "page_size": 2,
            "disabled_attribute": "employeeType",
            "disabled_value": "disabled",
        }
    )
    users = {user.email: user for user in directory.users()}
    assert sorted(users) == ["boss@example.com", "u0@example.com", "u1@example.com", "u2@example.com", "u3@example.com"]
    assert users["boss@example.com"].name == "The Boss"
    assert users["boss@example.com"].manager_email is None
    assert {users[f"u{n}@example.com"].manager_email for n in range(4)} == {"boss@example.com"}
    assert [email for email, user in sorted(users.items()) if user.disabled] == ["u3@example.com"]

    [team] = directory.groups()
    assert (team.name, team.description) == ("team", "T")
    assert team.member_emails == ("boss@example.com", "u0@example.com", "u1@example.com")


class _RangedDirectory:
    """Stands in for an AD connection: a group of 3 members sent as ``member;range=0-1`` then ``2-*``."""

    users = [f"CN=User {n},OU=Staff,DC=corp" for n in range(3)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.extend = self
        self.standard = self

    def open(self) -> None: ...

    def bind(self) -> None: ...

    def unbind(self) -> None: ...

    def paged_search(self, base: str, search_filter: str, scope: str, *, attributes: list[str], **kwargs: Any):
        if base == "OU=Staff,DC=corp":
            for n, dn in enumerate(self.users):
                yield _entry(dn, {"mail": [f"user{n}@corp.example".encode()]})
        elif attributes == ["member;range=2-*"]:
            yield _entry(base, {"member;range=2-*": [self.users[2].encode()]})
        else:
            first_two = [dn.encode() for dn in self.users[:2]]
            raw = {"cn": [b"big"], "objectClass": [b"group"], "member": [], "member;range=0-1": first_two}
            yield _entry("CN=big,OU=Groups,DC=corp", raw)


def _entry(dn: str, raw_attributes: dict[str, list[bytes]]) -> dict[str, Any]:
    return {"type": "searchResEntry", "dn": dn, "raw_attributes": raw_attributes}


def test_list_grants_follows_active_directory_member_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ldap3, "Connection", _RangedDirectory)
    monkeypatch.setenv(PASSWORD_ENV, "unused")
    connector = LdapConnector(
        {
            "url": "ldap://dc.corp.example",
            "bind_dn": "CN=lapse,DC=corp",
            "password_env": PASSWORD_ENV,
            "users_base": "OU=Staff,DC=corp",
            "groups_base": "OU=Groups,DC=corp",
            "insecure": True,
        }
    )
    held = connector.list_grants([DiscoveredRole(resource="groups", name="big")])
    assert sorted(entry.email or "" for entry in held) == [f"user{n}@corp.example" for n in range(3)]

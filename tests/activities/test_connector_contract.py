"""The connector interface's promises, asserted once for every driver against its real target.

Each driver gets a subject: a connector built as activities build it, an account and a role seeded in
the target with another holder beside it, and a way to read the target's own record (not through the
connector). The ledger keeps no record of its own (Lapse's grants ledger is the record), so what it
promises is that granting and revoking always succeed and that it reports nothing. The failure cases
run against the three drivers that reach a system which can fail.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from access.connectors import Connector, DiscoveredRole, PermanentError, RetryableError, Target
from activities.connectors import check_config
from harness.ldap import LdapServer
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.scim import ScimServer

INSECURE = " [INSECURE: insecure: true allows plaintext or unverified TLS to this target]"


@dataclass
class Subject:
    """One driver against its target, with an account and a role seeded there."""

    connector: Connector
    target: Target
    account: str
    """Holds nothing yet."""
    other: str | None
    """Held the role before the test, and must still hold it after; None for the ledger."""
    holds: Callable[[str], bool] | None
    """Whether an account holds the role, read from the target itself; None for the ledger, which has no record."""
    reached: str
    """What ``test_connection`` says it reached: a regular expression."""

    @property
    def role(self) -> DiscoveredRole:
        return DiscoveredRole(resource=self.target.resource, name=self.target.role)

    def listed(self) -> list[str]:
        """The holders of the role as the connector lists them (a list: one account listed twice shows)."""
        held = self.connector.list_grants([self.role])
        return sorted(h.account for h in held if (h.resource, h.role) == (self.target.resource, self.target.role))

    def holders_before(self) -> list[str]:
        return [self.other] if self.other else []


@dataclass
class Remote(Subject):
    """A driver that reaches a system which can fail, with the failures to provoke and what each must say."""

    unknown_role: Target
    unknown_role_says: str
    secret_env: str
    """The environment variable the connector reads its secret from."""
    wrong_secret: str
    wrong_secret_says: str
    missing_secret_says: str
    unreachable: Connector
    """The same driver, pointed at a port nothing listens on."""
    unreachable_says: str


def _ledger() -> Subject:
    return Subject(
        connector=check_config("ledger", {}),
        target=Target(integration="ledger", resource="prod-db", role="read", config={}),
        account="alan@example.com",
        other=None,
        holds=None,
        reached=re.escape("the Lapse ledger (no external system)"),
    )


def _postgres(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Remote:
    suffix = uuid.uuid4().hex[:6]
    role, account, other = f"contract_read_{suffix}", f"alan_{suffix}", f"grace_{suffix}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} NOLOGIN")
        admin.execute(f"CREATE ROLE {account} LOGIN PASSWORD 'alan-{suffix}'")
        admin.execute(f"CREATE ROLE {other} LOGIN IN ROLE {role}")
        version = admin.execute("SHOW server_version").fetchone()
    assert version is not None

    def holds(who: str) -> bool:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            row = admin.execute(
                "SELECT 1 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
                "JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = %s AND m.rolname = %s",
                (role, who),
            ).fetchone()
        return row is not None

    monkeypatch.setenv("LAPSE_TEST_PG_DSN", server.dsn())
    monkeypatch.setenv("LAPSE_TEST_PG_GONE_DSN", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    config = {"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True}
    return Remote(
        connector=check_config("postgres", config),
        target=Target(integration="pg", resource="postgres", role=role, config={}),
        account=account,
        other=other,
        holds=holds,
        reached=re.escape(f"PostgreSQL {version[0]} (plaintext){INSECURE}"),
        unknown_role=Target(integration="pg", resource="postgres", role=f"no_such_role_{suffix}", config={}),
        unknown_role_says=f"role no_such_role_{suffix} does not exist",
        secret_env="LAPSE_TEST_PG_DSN",
        wrong_secret=server.dsn(account, password="wrong"),
        wrong_secret_says="password authentication failed",
        missing_secret_says="LAPSE_TEST_PG_DSN",
        unreachable=check_config("postgres", {**config, "dsn_env": "LAPSE_TEST_PG_GONE_DSN"}),
        unreachable_says="cannot reach PostgreSQL",
    )


def _ldap(server: LdapServer, monkeypatch: pytest.MonkeyPatch) -> Remote:
    suffix = uuid.uuid4().hex[:6]
    people, groups = server.add_ou(f"people-{suffix}"), server.add_ou(f"groups-{suffix}")
    alan = server.add_user(f"alan-{suffix}", base=people, email=f"alan.{suffix}@example.com")
    grace = server.add_user(f"grace-{suffix}", base=people, email=f"grace.{suffix}@example.com")
    group = server.add_group("deployers", [grace], base=groups)
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", server.admin_password)
    config = {
        "url": server.url,
        "bind_dn": server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "users_base": people,
        "groups_base": groups,
        "insecure": True,
    }
    gone = f"ldap://127.0.0.1:{free_port()}"
    return Remote(
        connector=check_config("ldap", config),
        target=Target(integration="ldap", resource="groups", role="deployers", config={}),
        account=alan,
        other=grace,
        holds=lambda who: who.lower() in server.members(group),
        reached=re.escape(f"OpenLDAP at {server.url} (plaintext), bound as {server.admin_dn}{INSECURE}"),
        unknown_role=Target(integration="ldap", resource="groups", role="no-such-group", config={}),
        unknown_role_says=f"group cn=no-such-group not found under {groups}",
        secret_env="LAPSE_TEST_LDAP_PASSWORD",
        wrong_secret="wrong",
        wrong_secret_says=f"LDAP bind as {server.admin_dn} failed: invalid credentials",
        missing_secret_says="environment variable LAPSE_TEST_LDAP_PASSWORD",
        unreachable=check_config("ldap", {**config, "url": gone, "connect_timeout": 2}),
        unreachable_says=f"cannot reach LDAP at {gone}",
    )


def _scim(server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> Remote:
    suffix = uuid.uuid4().hex[:6]
    account, other = f"ada.{suffix}@example.com", f"bob.{suffix}@example.com"
    ids = {account: server.create_user(account, account), other: server.create_user(other, other)}
    group = server.create_group(f"sales-{suffix}", [ids[other]])
    monkeypatch.setenv("LAPSE_TEST_SCIM_TOKEN", server.token)
    config = {"base_url": server.base_url, "token_env": "LAPSE_TEST_SCIM_TOKEN", "insecure": True}
    gone = f"http://127.0.0.1:{free_port()}/v2"
    return Remote(
        connector=check_config("scim", config),
        target=Target(integration="crm", resource="app", role=f"sales-{suffix}", config={}),
        account=account,
        other=other,
        holds=lambda who: ids[who] in server.members(group),
        reached=re.escape(f"SCIM 2.0 at {server.base_url} (plaintext): ")
        + r"\d+ users, \d+ groups"
        + re.escape(INSECURE),
        unknown_role=Target(integration="crm", resource="app", role=f"nope-{suffix}", config={}),
        unknown_role_says=f"group 'nope-{suffix}' does not exist",
        secret_env="LAPSE_TEST_SCIM_TOKEN",
        wrong_secret="not-the-token",
        wrong_secret_says=re.escape("refused the bearer token from $LAPSE_TEST_SCIM_TOKEN"),
        missing_secret_says="LAPSE_TEST_SCIM_TOKEN .* is not set",
        unreachable=check_config("scim", {**config, "base_url": gone, "timeout": 2}),
        unreachable_says="cannot reach the SCIM server .* Connection refused",
    )


def _remote(kind: str, request: pytest.FixtureRequest) -> Remote:
    """The subject for ``kind``; only the server it needs is started."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    if kind == "postgres":
        return _postgres(request.getfixturevalue("postgres"), monkeypatch)
    if kind == "ldap":
        return _ldap(request.getfixturevalue("ldap_server"), monkeypatch)
    return _scim(request.getfixturevalue("scim_server"), monkeypatch)


@pytest.fixture(params=["ledger", "postgres", "ldap", "scim"])
def subject(request: pytest.FixtureRequest) -> Subject:
    return _ledger() if request.param == "ledger" else _remote(request.param, request)


@pytest.fixture(params=["postgres", "ldap", "scim"])
def remote(request: pytest.FixtureRequest) -> Remote:
    return _remote(request.param, request)


# --- grant and revoke are idempotent -------------------------------------------------------------


def test_granting_twice_is_one_grant(subject: Subject) -> None:
    subject.connector.grant(subject.account, subject.target, None)
    subject.connector.grant(subject.account, subject.target, None)  # a retried activity does this

    if subject.holds is not None:
        assert subject.holds(subject.account)
        assert subject.other is not None and subject.holds(subject.other)
    assert subject.listed().count(subject.account) == (1 if subject.connector.discovers else 0)


def test_revoking_twice_is_success_and_leaves_the_other_holder(subject: Subject) -> None:
    subject.connector.grant(subject.account, subject.target, None)
    subject.connector.revoke(subject.account, subject.target)
    subject.connector.revoke(subject.account, subject.target)  # revoking what is gone is success

    if subject.holds is not None:
        assert not subject.holds(subject.account)
        assert subject.other is not None and subject.holds(subject.other)


def test_revoking_what_was_never_granted_is_success(subject: Subject) -> None:
    subject.connector.revoke(subject.account, subject.target)

    if subject.holds is not None:
        assert not subject.holds(subject.account)
    assert subject.listed() == (subject.holders_before() if subject.connector.discovers else [])


# --- what the target reports ---------------------------------------------------------------------


def test_list_grants_follows_grant_and_revoke(subject: Subject) -> None:
    if not subject.connector.discovers:  # the ledger: Lapse's own grants ledger is the record
        subject.connector.grant(subject.account, subject.target, None)
        assert subject.listed() == []
        return
    assert subject.listed() == subject.holders_before()

    subject.connector.grant(subject.account, subject.target, None)
    assert subject.listed() == sorted([*subject.holders_before(), subject.account])

    subject.connector.revoke(subject.account, subject.target)
    assert subject.listed() == subject.holders_before()


def test_discovery_finds_the_seeded_role(subject: Subject) -> None:
    discovery = subject.connector.discover()

    found = [(role.resource, role.name) for role in discovery.roles]
    if subject.connector.discovers:
        assert (subject.target.resource, subject.target.role) in found
        assert subject.target.resource in discovery.resources
    else:
        assert (found, discovery.resources) == ([], {})


def test_connection_says_what_it_reached(subject: Subject) -> None:
    assert re.fullmatch(subject.reached, subject.connector.test_connection())


# --- errors a user can act on: permanent, or worth retrying --------------------------------------


def test_an_unknown_role_is_a_permanent_error_naming_it(remote: Remote) -> None:
    with pytest.raises(PermanentError, match=remote.unknown_role_says):
        remote.connector.grant(remote.account, remote.unknown_role, None)


@pytest.mark.parametrize("call", ["test_connection", "grant", "revoke"])
def test_a_wrong_secret_is_a_permanent_error(remote: Remote, call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(remote.secret_env, remote.wrong_secret)
    with pytest.raises(PermanentError, match=remote.wrong_secret_says):
        _call(remote.connector, call, remote)
    assert remote.holds is not None and not remote.holds(remote.account)  # nor did the refused call change anything


def test_a_missing_secret_is_a_permanent_error_naming_where_it_was_looked_for(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(remote.secret_env)
    with pytest.raises(PermanentError, match=remote.missing_secret_says):
        remote.connector.test_connection()


@pytest.mark.parametrize("call", ["test_connection", "grant", "revoke"])
def test_an_unreachable_target_is_retryable(remote: Remote, call: str) -> None:
    with pytest.raises(RetryableError, match=remote.unreachable_says):
        _call(remote.unreachable, call, remote)


def _call(connector: Connector, call: str, subject: Subject) -> Any:
    if call == "grant":
        return connector.grant(subject.account, subject.target, None)
    if call == "revoke":
        return connector.revoke(subject.account, subject.target)
    return connector.test_connection()

"""Group references and identities (finding 9), without LDAP: parsing and resolving references, the
directory sync keeping each source's groups apart, and migration 0007 on an app DB that has data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlmodel import select

from activities.connectors.ldap_directory import DirectoryGroup, DirectorySnapshot, DirectoryUser
from activities.directory import _sync
from activities.directory_sources import Source
from starter.services.org import checked_connector
from store import catalog
from store.db import MIGRATIONS, migrate, session_scope
from store.groups import GroupRow, parse, resolve_one
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.tables import Group

pytestmark = pytest.mark.every_app_db

ROWS = [
    GroupRow(1, "file", "security", "security"),
    GroupRow(2, "corp", "security", "uuid-1"),
    GroupRow(3, "corp", "dbas", "uuid-2"),
    GroupRow(4, "corp", "dbas", "uuid-3"),
    GroupRow(5, "hr", "payroll", "uuid-4"),
    GroupRow(6, "corp", "payroll", "uuid-5"),
]


@pytest.fixture
def db_url(app_db: str) -> str:
    migrate(app_db)
    return app_db


def test_references_parse_by_source_name_and_external_id() -> None:
    assert (parse("security").source, parse("security").name) == (None, "security")
    assert (parse("corp:security").source, parse("corp:security").name) == ("corp", "security")
    assert (parse("corp:#uuid-1").source, parse("corp:#uuid-1").external_id) == ("corp", "uuid-1")
    assert parse("corp:a:b").name == "a:b"  # a directory's names may hold ':'; integration names never do


@pytest.mark.parametrize(
    ("ref", "group", "problem"),
    [
        ("security", 1, None),  # the organisation file's, whatever a directory calls its own
        ("file:security", 1, None),
        ("corp:security", 2, None),
        ("corp:#uuid-3", 4, None),
        ("file:#security", 1, None),
        ("corp:dbas", None, "ambiguous: corp has 2 groups of that name (corp:#uuid-2, corp:#uuid-3)"),
        ("dbas", None, "ambiguous"),
        ("payroll", None, "the organisation file has no group of that name and several sources do"),
        ("hr:payroll", 5, None),
        ("nope", None, "unknown group 'nope'"),
        ("hr:security", None, "unknown group"),
        ("corp:#", None, "not a group reference"),
        (":security", None, "not a group reference"),
    ],
)
def test_a_reference_names_one_group_or_says_why_not(ref: str, group: int | None, problem: str | None) -> None:
    resolution = resolve_one(ref, ROWS)
    assert (resolution.group.id if resolution.group else None) == group
    if problem:
        assert resolution.problem is not None and problem in resolution.problem


def test_a_bare_name_of_a_single_directory_group_names_it() -> None:
    """Nothing else could be meant; a namesake appearing later makes it ambiguous (names nobody), never merged."""
    assert resolve_one("dbas", ROWS[2:3]).group == ROWS[2]
    assert resolve_one("dbas", ROWS[2:4]).group is None


def test_the_file_puts_users_only_in_its_own_groups_and_names_hold_no_source() -> None:
    with pytest.raises(ValueError, match="its own groups only"):
        OrgFile.model_validate({"users": [{"email": "a@example.com", "groups": ["corp:security"]}]})
    assert OrgFile.model_validate({"users": [{"email": "a@example.com", "groups": ["file:x"]}]}).users[0].groups == [
        "x"
    ]
    with pytest.raises(ValueError, match="cannot be empty or hold ':'"):
        OrgFile.model_validate({"groups": [{"name": "corp:security"}]})


def _directory(*groups: DirectoryGroup, users: tuple[str, ...] = ("mallory@example.com",)) -> Source:
    people = tuple(
        DirectoryUser(dn=f"uid={u},ou=p", email=u, name=u, manager_email=None, disabled=False, external_id=u)
        for u in users
    )
    return Source("corp", DirectorySnapshot(users=people, groups=groups), complete=True)


def test_the_sync_keeps_each_sources_groups_apart_and_follows_renames(db_url: str) -> None:
    with session_scope(db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
    fake = DirectoryGroup("cn=security,ou=g", "security", "", ("mallory@example.com",), external_id="uuid-s")
    with session_scope(db_url) as session:
        result = _sync(session, [_directory(fake)], "test", datetime.now(UTC))
        assert result.joiners[0].groups == ["corp:security"]
        rows = session.exec(select(Group).where(Group.name == "security")).all()
        assert sorted((g.source, g.external_id) for g in rows) == [("corp", "uuid-s"), ("file", "security")]
        ada = catalog.find_user(session, "ada@example.com")
        mallory = catalog.find_user(session, "mallory@example.com")
        assert ada is not None and mallory is not None
        assert catalog.groups_of(session, ada) == ["security"]  # the file's members stay theirs
        assert catalog.groups_of(session, mallory) == ["corp:security"]
    renamed = DirectoryGroup("cn=sec-team,ou=g", "sec-team", "", ("mallory@example.com",), external_id="uuid-s")
    with session_scope(db_url) as session:
        _sync(session, [_directory(renamed)], "test", datetime.now(UTC))
        (group,) = session.exec(select(Group).where(Group.source == "corp")).all()
        assert (group.name, group.external_id) == ("sec-team", "uuid-s")  # the same group, renamed


def test_migration_0007_keys_the_file_groups_and_the_next_sync_adopts_the_directorys(app_db: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", app_db)
    command.upgrade(config, "0006")
    with session_scope(app_db) as session:
        session.execute(text("INSERT INTO \"group\" (name, description, source) VALUES ('security', '', 'file')"))
        session.execute(text("INSERT INTO \"group\" (name, description, source) VALUES ('dbas', 'DBAs', 'corp')"))
    command.upgrade(config, "head")
    with session_scope(app_db) as session:
        rows = {g.name: (g.source, g.external_id) for g in session.exec(select(Group))}
        assert rows == {"security": ("file", "security"), "dbas": ("corp", None)}
    group = DirectoryGroup("cn=dbas,ou=g", "dbas", "", ("mallory@example.com",), external_id="uuid-d")
    with session_scope(app_db) as session:
        _sync(session, [_directory(group)], "test", datetime.now(UTC))
        (dbas,) = session.exec(select(Group).where(Group.source == "corp")).all()
        assert (dbas.name, dbas.external_id, dbas.description) == ("dbas", "uuid-d", "DBAs")


def test_a_second_entry_with_a_users_email_does_not_take_them_over(db_url: str) -> None:
    def entry(uid: str, name: str) -> DirectoryUser:
        return DirectoryUser(
            dn=f"uid={uid},ou=p",
            email="mallory@example.com",
            name=name,
            manager_email=None,
            disabled=False,
            external_id=uid,
        )

    first = Source("corp", DirectorySnapshot(users=(entry("real", "Mallory"),), groups=()), complete=True)
    with session_scope(db_url) as session:
        _sync(session, [first], "test", datetime.now(UTC))
    # An entry created later with the same email, listed first: the user stays bound to the real entry.
    both = (entry("copy", "Impostor"), entry("real", "Mallory"))
    with session_scope(db_url) as session:
        _sync(
            session, [Source("corp", DirectorySnapshot(users=both, groups=()), complete=True)], "t", datetime.now(UTC)
        )
        user = catalog.find_user(session, "mallory@example.com")
        assert user is not None and (user.name, user.external_id) == ("Mallory", "real")


def test_lapse_directory_groups_shows_each_groups_exact_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from starter import cli

    seen: list[tuple[str, str, dict[str, str] | None]] = []
    listed = [
        {
            "source": "file",
            "name": "security",
            "external_id": "security",
            "reference": "security",
            "members": 2,
            "namesakes": 1,
        },
        {
            "source": "corp",
            "name": "security",
            "external_id": "u-1",
            "reference": "corp:#u-1",
            "members": 5,
            "namesakes": 1,
        },
    ]

    def call(method: str, path: str, body: object = None, params: dict[str, str] | None = None) -> object:
        seen.append((method, path, params))
        return listed

    monkeypatch.setattr(cli, "_call", call)
    result = CliRunner().invoke(cli.app, ["--as", "ada@example.com", "directory", "groups", "--name", "security"])
    assert result.exit_code == 0, result.output
    assert seen == [("GET", "/api/directory/groups", {"name": "security"})]
    assert "corp:#u-1  corp  security  5 members  (1 other group(s) of this name)" in result.output

"""The directory sync's identity sources, each read whole: the LDAP directories, else the organisation file.

The sources are the integrations marked ``directory`` (LDAP only); with none, the organisation file.
Each is read as a snapshot of users and groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from temporalio.exceptions import ApplicationError

from activities.connectors import from_config
from activities.connectors.ldap_directory import DirectoryGroup, DirectorySnapshot, DirectoryUser, LdapDirectory
from store.db import session_scope
from store.org import OrgError, OrgFile
from store.tables import Integration

FILE_SOURCE = "file"
"""The organisation file's name as a source (of its users and groups in the app DB)."""


@dataclass(frozen=True)
class Source:
    """One identity source, as read for this run."""

    name: str
    snapshot: DirectorySnapshot
    complete: bool
    """The whole organisation: its users that are absent are leavers, and its groups hold exactly the
    members it lists. The organisation file is not complete: ``lapse load-org`` may have loaded others."""


DirectoryReader = Callable[[Mapping[str, Any]], LdapDirectory]


def read_sources(db_url: str, org_file: Path, reader: DirectoryReader = LdapDirectory) -> list[Source]:
    """Every directory integration read whole; the organisation file when there is none. An integration
    marked as the directory that is not LDAP, or whose configuration is invalid, fails for good."""
    with session_scope(db_url, write=False) as session:
        directories = session.exec(
            select(Integration).where(col(Integration.directory).is_(True)).order_by(Integration.name)
        ).all()
    if not directories:
        return [Source(FILE_SOURCE, read_org_file(org_file), complete=False)]
    sources: list[Source] = []
    for integration in directories:
        if integration.kind != "ldap":
            raise ApplicationError(
                f"integration {integration.name} is marked as the directory, but only ldap integrations can be "
                f"read as one (it is {integration.kind})",
                type="NotADirectory",
                non_retryable=True,
            )
        sources.append(Source(integration.name, from_config(integration, reader).read(), complete=True))
    return sources


def read_org_file(path: Path) -> DirectorySnapshot:
    """The organisation file's users and groups, as a directory would report them."""
    try:
        org = OrgFile.read(path)
    except (OrgError, OSError) as error:
        raise ApplicationError(
            f"cannot read the organisation file: {error}", type="BadOrgFile", non_retryable=True
        ) from error
    users = tuple(
        DirectoryUser(
            dn="",
            email=entry.email.strip().lower(),
            name=entry.name,
            manager_email=entry.manager.strip().lower() if entry.manager else None,
            disabled=not entry.active,
            department=(entry.department or "").strip() or None,
        )
        for entry in org.users
    )
    members: dict[str, set[str]] = defaultdict(set)
    for entry in org.users:
        for group in entry.groups:
            members[group].add(entry.email.strip().lower())
    described = {group.name: group.description for group in org.groups}
    groups = tuple(
        DirectoryGroup(
            dn="",
            name=name,
            description=described.get(name, ""),
            member_emails=tuple(sorted(members[name])),
            external_id=name,  # the file's groups are keyed by name, in their own source
        )
        for name in sorted(set(described) | set(members))
    )
    return DirectorySnapshot(users=users, groups=groups)

"""An LDAP directory as Lapse's identity source: its users, groups and members, read whole.

Users come with their manager and disabled flag; one connection reads everything. The snapshot
shape defined here is what every identity source reports (the organisation file too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from access.limits import MAX_NAME
from activities.connectors.base import ConnectorBase
from activities.connectors.ldap_client import ENTRY_IDS, Entry, LdapClient, dn_key, entry_id
from activities.connectors.ldap_config import LdapConfig

_ACCOUNT_DISABLED = 0x2
"""The ACCOUNTDISABLE bit of AD's userAccountControl."""


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    email: str
    """Lowercased, as Lapse stores emails."""
    name: str
    manager_email: str | None
    """The manager's email, when the ``manager`` DN is a user under users_base with an email."""
    disabled: bool
    external_id: str = ""
    """The entry's permanent identity (``entry_id``); empty for the organisation file's users."""
    department: str | None = None
    """The department the source names (the ``department_attribute``, the file's ``department:``)."""


@dataclass(frozen=True)
class DirectoryGroup:
    dn: str
    name: str
    description: str
    member_emails: tuple[str, ...]
    """Direct members that are users with an email; nested groups and other entries are left out."""
    external_id: str = ""
    """The entry's permanent identity (``entry_id``): the group's key in Lapse, with the source. The name
    (``cn``) is only its display name: anyone who may create an entry under groups_base can reuse it."""


@dataclass(frozen=True)
class DirectorySnapshot:
    users: tuple[DirectoryUser, ...]
    groups: tuple[DirectoryGroup, ...]


class LdapDirectory(ConnectorBase):
    """The directory as an identity source: users (with manager and disabled flag), groups, memberships.

    Users without an email are left out: Lapse knows people by email.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = LdapConfig.model_validate(dict(config))
        self._directory = LdapClient(self.config)

    def read(self) -> DirectorySnapshot:
        """Users and groups with their members, in one connection and two paged searches."""
        with self._directory.connect() as connection:
            users = self._users(connection)
            return DirectorySnapshot(users=tuple(users.values()), groups=tuple(self._groups(connection, users)))

    def users(self) -> list[DirectoryUser]:
        with self._directory.connect() as connection:
            return list(self._users(connection).values())

    def groups(self) -> list[DirectoryGroup]:
        """Groups with their members' emails (which needs the users too)."""
        return list(self.read().groups)

    def _users(self, connection: Any) -> dict[str, DirectoryUser]:
        """Users by DN key; managers are resolved after all users are read, as they can come in any order."""
        config = self.config
        extra = [config.name_attribute, config.manager_attribute, "cn", *ENTRY_IDS]
        if config.disabled_attribute:
            extra.append(config.disabled_attribute)
        if config.department_attribute:
            extra.append(config.department_attribute)
        entries = self._directory.users(connection, extra)
        emails = {dn_key(entry.dn): (entry.first(config.mail_attribute) or "").lower() for entry in entries}
        users: dict[str, DirectoryUser] = {}
        for entry in entries:
            key = dn_key(entry.dn)
            manager = entry.first(config.manager_attribute)
            users[key] = DirectoryUser(
                dn=entry.dn,
                email=emails[key],
                name=entry.first(config.name_attribute) or entry.first("cn") or emails[key],
                manager_email=emails.get(dn_key(manager)) if manager else None,
                disabled=self._disabled(entry),
                external_id=entry_id(entry),
                department=_department(entry, config.department_attribute),
            )
        return users

    def _disabled(self, entry: Entry) -> bool:
        attribute, expected = self.config.disabled_attribute, self.config.disabled_value
        if attribute is None:
            return False
        values = entry.all(attribute)
        if attribute.lower() == "useraccountcontrol":
            return any(value.strip().isdigit() and int(value) & _ACCOUNT_DISABLED for value in values)
        if expected is None:
            return bool(values)
        return any(value.lower() == expected.lower() for value in values)

    def _groups(self, connection: Any, users: Mapping[str, DirectoryUser]) -> Iterator[DirectoryGroup]:
        for group in self._directory.groups(connection):
            emails = [
                users[key].email for key in map(dn_key, self._directory.members(connection, group)) if key in users
            ]
            yield DirectoryGroup(
                dn=group.dn,
                name=group.first("cn") or group.dn,
                description=group.first("description") or "",
                member_emails=tuple(sorted(set(emails))),
                external_id=entry_id(group),
            )


def _department(entry: Entry, attribute: str | None) -> str | None:
    """The entry's department, bounded as the organisation file bounds one; None when it names none."""
    value = (entry.first(attribute) or "").strip() if attribute else ""
    return " ".join(value.split())[:MAX_NAME] or None

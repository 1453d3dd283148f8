"""The LDAP / Active Directory connector: roles are groups; a grant adds a member.

Its settings are ``ldap_config.LdapConfig``; binding and searching are ``ldap_client.LdapClient``,
which the identity source (``ldap_directory``) shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import ldap3  # type: ignore[import-untyped]
from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped]

from access.connectors import Credentials, DiscoveredRole, Discovery, HeldRole, PermanentError, Target
from activities.connectors.base import ConnectorBase
from activities.connectors.ldap_client import (
    ADMIN_MARKS,
    ENTRY_EXISTS,
    NO_SUCH_ATTRIBUTE,
    OBJECT_CLASS_VIOLATION,
    VALUE_EXISTS,
    Entry,
    LdapClient,
    dn_key,
    is_dn,
)
from activities.connectors.ldap_config import LdapConfig


class LdapConnector(ConnectorBase):
    """Roles are groups under groups_base (``groupOfNames`` or AD ``group``); accounts are user DNs.

    A user's account is the DN of the entry under users_base whose mail attribute is their
    email; the integration's ``account`` rule is not used, since the directory itself links
    people to entries. Granting adds the DN to the group's ``member``; revoking removes it,
    writing ``placeholder_member`` when the last member of a ``groupOfNames`` goes. Where the directory is Active
    Directory, each member's ``lastLogonTimestamp`` is when its access was last seen in use.
    """

    discovers = True
    accounts_by_rule = False
    per_grant_accounts = False
    """list_grants reports each member's email, and account_for is a search: never run it for every user."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = LdapConfig.model_validate(dict(config))
        self._directory = LdapClient(self.config)
        self._accounts: dict[str, str] = {}

    def account_for(self, email: str) -> str:
        """The DN of the one user whose mail attribute is ``email``."""
        key = email.strip().lower()
        if key not in self._accounts:
            config = self.config
            search_filter = f"(&{config.user_filter}({config.mail_attribute}={escape_filter_chars(email.strip())}))"
            with self._directory.connect() as connection:
                found = list(islice(self._directory.entries(connection, config.users_base, search_filter, ["1.1"]), 2))
            if not found:
                raise PermanentError(f"no LDAP user has {config.mail_attribute}={email} under {config.users_base}")
            if len(found) > 1:
                raise PermanentError(f"more than one LDAP user has {config.mail_attribute}={email}: {found[0].dn}, …")
            self._accounts[key] = found[0].dn
        return self._accounts[key]

    def test_connection(self) -> str:
        """Binds, checks both bases exist and names the server, or a ConnectorError saying what is wrong."""
        config = self.config
        with self._directory.connect() as connection:
            root = next(
                self._directory.entries(
                    connection, "", "(objectClass=*)", ["vendorName", "vendorVersion", "objectClass"], scope=ldap3.BASE
                ),
                None,
            )
            for base in (config.users_base, config.groups_base):
                list(self._directory.entries(connection, base, "(objectClass=*)", ["1.1"], scope=ldap3.BASE))
        return f"{_server_name(root)} at {config.url} ({config.transport}), bound as {config.bind_dn}" + (
            config.insecure_note()
        )

    def discover(self) -> Discovery:
        """One resource holding every group, each described by its ``description``."""
        config = self.config
        roles: dict[str, DiscoveredRole] = {}
        warnings: list[str] = []
        allowed = {name.lower() for name in config.allow_privileged}
        with self._directory.connect() as connection:
            bind_groups = self._directory.bind_dn_groups(connection)
            for group in self._directory.groups(connection):
                name = group.first("cn")
                # A cn that repeats in another OU names one role; granting it then reports the ambiguity.
                if not name or name.lower() in roles:
                    continue
                description = group.first("description") or ""
                why = self._directory.privileged(group, bind_groups)
                if why and name.lower() not in allowed:
                    warnings.append(
                        f"left out the admin group {group.dn} ({why}); allow_privileged names it to offer it"
                    )
                    continue
                if why:
                    warnings.append(f"offering the admin group {group.dn} ({why}): it is in allow_privileged")
                    description = f"WARNING: privileged ({why}), allowed by allow_privileged. {description}".strip()
                roles[name.lower()] = DiscoveredRole(config.resource, name, description)
        return Discovery(
            resources={config.resource: f"LDAP groups under {config.groups_base}"},
            roles=sorted(roles.values(), key=lambda role: role.name.lower()),
            warnings=warnings,
        )

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        """Direct members of the groups, with the email of those who are users (one search for all users)."""
        by_name = {role.name.lower(): role for role in roles}
        if not by_name:
            return []
        mail = self.config.mail_attribute
        held: list[HeldRole] = []
        with self._directory.connect() as connection:
            # AD's last logon comes with the users' search at no extra cost; other directories have none to give.
            users = {dn_key(user.dn): user for user in self._directory.users(connection, [LAST_LOGON])}
            for group in self._directory.groups(connection, names=[role.name for role in by_name.values()]):
                role = by_name.get((group.first("cn") or "").lower())
                if role is None:
                    continue
                for member in self._directory.members(connection, group):
                    user = users.get(dn_key(member))
                    # The user's DN as the directory spells it, so it equals what account_for returns.
                    account, email = (user.dn, (user.first(mail) or "").lower()) if user else (member, None)
                    used = filetime(user.first(LAST_LOGON)) if user else None
                    held.append(
                        HeldRole(account=account, resource=role.resource, role=role.name, email=email, last_used=used)
                    )
        return held

    def _group(self, connection: Any, target: Target, *, granting: bool = False) -> Entry:
        config = self.config
        search_filter = f"(&{config.group_filter}(cn={escape_filter_chars(target.role)}))"
        attributes = ["objectClass", "cn", *ADMIN_MARKS]
        found = list(islice(self._directory.entries(connection, config.groups_base, search_filter, attributes), 2))
        if not found:
            raise PermanentError(f"group cn={target.role} not found under {config.groups_base} ({target.path})")
        if len(found) > 1:
            raise PermanentError(f"more than one group is called cn={target.role} under {config.groups_base}")
        if granting and target.role.lower() not in {name.lower() for name in config.allow_privileged}:
            why = self._directory.privileged(found[0], self._directory.bind_dn_groups(connection))
            if why:
                raise PermanentError(
                    f"group {found[0].dn} is a directory admin group ({why}) and not in the integration's "
                    "allow_privileged: not granting it"
                )
        return found[0]

    def _check_account(self, account: str) -> None:
        if not is_dn(account):
            raise PermanentError(
                f"account {account!r} is not an LDAP DN (expected e.g. uid=alan,{self.config.users_base})"
            )

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        self._check_account(account)
        with self._directory.connect() as connection:
            group = self._group(connection, target, granting=True)
            self._directory.modify(connection, group.dn, [(ldap3.MODIFY_ADD, account)], tolerate=_ALREADY_THERE)
            if _requires_member(group):
                placeholder = [(ldap3.MODIFY_DELETE, self.config.placeholder_member)]
                self._directory.modify(connection, group.dn, placeholder, tolerate={NO_SUCH_ATTRIBUTE})
        return None

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        """Membership has no end date of its own here: the revoke at expiry ends it."""
        return None

    def revoke(self, account: str, target: Target) -> None:
        self._check_account(account)
        with self._directory.connect() as connection:
            group = self._group(connection, target)
            tolerate = {NO_SUCH_ATTRIBUTE, OBJECT_CLASS_VIOLATION}
            result = self._directory.modify(connection, group.dn, [(ldap3.MODIFY_DELETE, account)], tolerate=tolerate)
            if result == OBJECT_CLASS_VIOLATION and _requires_member(group):
                # The account was the last member: swap in the placeholder in one atomic change.
                swap = [(ldap3.MODIFY_ADD, self.config.placeholder_member), (ldap3.MODIFY_DELETE, account)]
                self._directory.modify(connection, group.dn, swap, tolerate={NO_SUCH_ATTRIBUTE})
            elif result == OBJECT_CLASS_VIOLATION:
                raise PermanentError(f"the directory refused to remove the last member of {group.dn}")


LAST_LOGON = "lastLogonTimestamp"
"""Active Directory's last logon of a user, replicated to every domain controller (only every 9 to 14 days, so
it says "used within about two weeks of this", never "not used since")."""
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_FILETIME_NEVER = 0x7FFF_FFFF_FFFF_FFFF


def filetime(value: str | None) -> datetime | None:
    """A Windows FILETIME as AD writes one (100 ns intervals since 1601-01-01 UTC, in decimal) as a UTC time; None
    where there is none: absent, malformed, 0 or the largest value (both "never")."""
    try:
        ticks = int((value or "").strip())
    except ValueError:
        return None
    if ticks <= 0 or ticks >= _FILETIME_NEVER:
        return None
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:  # past the year 9999: not a real logon
        return None


_ALREADY_THERE = {VALUE_EXISTS, ENTRY_EXISTS}
"""Adding a present member: OpenLDAP says attributeOrValueExists, AD entryAlreadyExists."""


def _requires_member(group: Entry) -> bool:
    return "groupofnames" in {value.lower() for value in group.all("objectClass")}


def _server_name(root: Entry | None) -> str:
    if root is None:
        return "LDAP server"
    vendor = " ".join(filter(None, (root.first("vendorName"), root.first("vendorVersion"))))
    if vendor:
        return vendor
    if "openldaprootdse" in {value.lower() for value in root.all("objectClass")}:
        return "OpenLDAP"
    return "LDAP server"

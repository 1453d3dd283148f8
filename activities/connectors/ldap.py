"""The LDAP / Active Directory connector and identity source: roles are groups; a grant adds a member.

Every read is a paged search, so directories with more entries than the server's size limit
(AD's 1,000, OpenLDAP's 500) are read whole; AD's ranged ``member`` values are followed too.
"""

from __future__ import annotations

import functools
import re
import ssl
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import ldap3  # type: ignore[import-untyped]
from ldap3.core.exceptions import (  # type: ignore[import-untyped]
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPException,
    LDAPInvalidDnError,
    LDAPOperationResult,
    LDAPResponseTimeoutError,
)
from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped]
from ldap3.utils.dn import parse_dn  # type: ignore[import-untyped]
from pydantic import Field, field_validator, model_validator

from access.connectors import (
    ConnectorConfig,
    Credentials,
    DiscoveredRole,
    Discovery,
    HeldRole,
    PermanentError,
    RetryableError,
    Target,
)
from activities.connectors.base import ConnectorBase
from activities.connectors.secrets import EnvName, SecretFile, allowed_host, check_host, secret, secret_file

_BUSY, _UNAVAILABLE, _TIME_LIMIT_EXCEEDED = 51, 52, 3
_RETRYABLE_RESULTS = {_BUSY, _UNAVAILABLE, _TIME_LIMIT_EXCEEDED}
_NO_SUCH_OBJECT, _NO_SUCH_ATTRIBUTE, _VALUE_EXISTS, _ENTRY_EXISTS, _OBJECT_CLASS_VIOLATION = 32, 16, 20, 68, 65
_PERMISSIVE_MODIFY = ("1.2.840.113556.1.4.1413", False, None)
"""Makes adding a present value or deleting an absent one succeed (AD and OpenLDAP honour it)."""
_ACCOUNT_DISABLED = 0x2
"""The ACCOUNTDISABLE bit of AD's userAccountControl."""


class LdapConfig(ConnectorConfig):
    """An LDAP directory's settings, for the connector and the identity source alike.

    The bind password is a reference (an env var or a file), never the secret itself.
    """

    url: str
    """``ldaps://host:port`` (or ``ldap://host:port`` with ``start_tls``; plain ``ldap://`` only with ``insecure``)."""
    bind_dn: str
    password_env: EnvName | None = None
    password_file: SecretFile | None = None
    start_tls: bool = False
    """Upgrade an ``ldap://`` connection with StartTLS (certificate verified) before binding."""
    ca_file: SecretFile | None = None
    """The CA certificate (PEM) the server's certificate must chain to, inside the secrets directory;
    default: the system's trusted roots."""
    verify_tls: bool = True
    """Check the server's certificate and name; turning it off needs ``insecure: true``."""
    allow_privileged: list[str] = []
    """Directory admin groups (AD's protected groups: ``adminCount``, critical system objects, Domain
    Admins and the like; any group the bind DN itself is in) that may still be discovered and granted,
    by ``cn``; each is catalogued with a warning. Any other admin group is never requestable."""
    users_base: str
    groups_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    mail_attribute: str = "mail"
    """The attribute holding a user's email (AD directories without ``mail`` can use ``userPrincipalName``)."""
    resource: str = "groups"
    """The resource the groups are catalogued under."""
    placeholder_member: str = ""
    """Written into a ``groupOfNames`` when its last member is revoked (the class requires one); never a grant."""
    page_size: int = Field(default=500, ge=1, le=100_000)
    connect_timeout: float = Field(default=10, gt=0)
    receive_timeout: float = Field(default=30, gt=0)
    name_attribute: str = "displayName"
    """Identity source: a user's display name (``cn`` when absent)."""
    manager_attribute: str = "manager"
    """Identity source: the DN of a user's manager."""
    disabled_attribute: str | None = None
    """Identity source: marks disabled users. ``userAccountControl`` tests AD's ACCOUNTDISABLE bit;
    any other attribute marks a user disabled when present (e.g. ``pwdAccountLockedTime``) or,
    with ``disabled_value``, when it holds that value (e.g. ``employeeType`` = ``disabled``)."""
    disabled_value: str | None = None

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, url: str) -> str:
        if not re.match(r"^ldaps?://[^/\s]+/?$", url):
            raise ValueError("url must look like ldap://host:port or ldaps://host:port")
        return url

    @field_validator("user_filter", "group_filter")
    @classmethod
    def _parenthesized(cls, search_filter: str) -> str:
        if not (search_filter.startswith("(") and search_filter.endswith(")")):
            raise ValueError("an LDAP filter is written in parentheses, e.g. (objectClass=person)")
        return search_filter

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapConfig:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("set exactly one of password_env or password_file")
        if self.url.startswith("ldaps://") and self.start_tls:
            raise ValueError("start_tls is for ldap:// URLs: ldaps:// is TLS from the start")
        if not self.insecure and not (self.url.startswith("ldaps://") or self.start_tls):
            raise ValueError(
                "ldap:// sends the bind password in clear: use ldaps://, or start_tls: true, "
                "or set insecure: true to allow plaintext"
            )
        if not self.insecure and not self.verify_tls:
            raise ValueError("verify_tls: false accepts any certificate: it needs insecure: true")
        allowed_host(self.host)
        if self.disabled_value is not None and (self.disabled_attribute or "").lower() == "useraccountcontrol":
            raise ValueError("disabled_value does not apply to userAccountControl (its disabled bit is tested)")
        return self

    def password(self) -> str:
        return secret(
            env=self.password_env,
            file=self.password_file,
            what=f"the LDAP password for {self.bind_dn}",
            field="password",
        )

    def tls(self) -> Any:
        """ldap3's TLS settings for ldaps:// or StartTLS (None for plaintext): verified unless ``verify_tls`` is off."""
        if not (self.url.startswith("ldaps://") or self.start_tls):
            return None
        ca = None
        if self.ca_file is not None:
            ca = secret_file(self.ca_file, what="the LDAP server's CA certificate", field="ca_file").decode()
        host = self.host
        return ldap3.Tls(validate=ssl.CERT_REQUIRED if self.verify_tls else ssl.CERT_NONE, ca_certs_data=ca, sni=host)

    @property
    def host(self) -> str:
        address = self.url.split("://", 1)[1].rstrip("/")
        host = address.rsplit("]", 1)[0] + "]" if address.startswith("[") else address.rsplit(":", 1)[0]
        return host.strip("[]")

    @property
    def transport(self) -> str:
        if self.url.startswith("ldaps://"):
            kind = "ldaps"
        elif self.start_tls:
            kind = "StartTLS"
        else:
            return "plaintext"
        return kind + (", certificate verified" if self.verify_tls else ", certificate NOT verified")


def _words(description: str) -> str:
    """``insufficientAccessRights`` → ``insufficient access rights``: ldap3 names results in camel case."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", description).lower()


@contextmanager
def _classified(doing: str, url: str) -> Iterator[None]:
    """Turn ldap3 errors into retryable (network, busy) or permanent (credentials, rights, missing entries)."""
    try:
        yield
    except LDAPOperationResult as error:
        detail = f"{doing} failed: {_words(str(error.description))}" + (f" ({error.message})" if error.message else "")
        if error.result in _RETRYABLE_RESULTS:
            raise RetryableError(detail) from error
        raise PermanentError(detail) from error
    except LDAPCertificateError as error:
        raise PermanentError(f"the TLS certificate of LDAP at {url} is not valid: {error}") from error
    except (LDAPCommunicationError, LDAPResponseTimeoutError) as error:
        if "certificate" in str(error).lower():  # the handshake refused it: configuration, not the network
            raise PermanentError(f"the TLS certificate of LDAP at {url} is not valid: {error}") from error
        raise RetryableError(f"cannot reach LDAP at {url}: {error}") from error
    except LDAPException as error:
        raise PermanentError(f"{doing} failed: {error}") from error


@functools.lru_cache(maxsize=65536)
def _dn_key(dn: str) -> str:
    """A DN in a form that compares equal however it was spaced or cased (as LDAP compares it).

    Cached: discovery meets each member DN once per group it is in, and parsing is slow.
    """
    try:
        return ",".join(f"{kind.lower()}={value.lower()}" for kind, value, _ in parse_dn(dn, strip=True))
    except LDAPInvalidDnError:
        return dn.strip().lower()


def _is_dn(dn: str) -> bool:
    try:
        return bool(parse_dn(dn))
    except LDAPInvalidDnError:
        return False


@dataclass(frozen=True)
class _Entry:
    """A search result: its DN and raw values, by lowercased attribute name."""

    dn: str
    values: Mapping[str, list[bytes]]

    def all(self, attribute: str) -> list[str]:
        return [value.decode("utf-8", "replace") for value in self.values.get(attribute.lower(), [])]

    def first(self, attribute: str) -> str | None:
        values = self.all(attribute)
        return values[0] if values else None

    def ranged(self, attribute: str) -> tuple[str, list[str]] | None:
        """AD returns large multi-valued attributes in ranges, as ``member;range=0-1499``."""
        prefix = f"{attribute.lower()};range="
        for key in self.values:
            if key.startswith(prefix):
                return key[len(prefix) :], self.all(key)
        return None


class _Directory:
    """One directory, as both public classes read and change it."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    @contextmanager
    def connect(self) -> Iterator[Any]:
        config = self.config
        check_host(config.host, field="url")  # before the password is read, let alone sent
        password = config.password()
        server = ldap3.Server(config.url, get_info=ldap3.NONE, connect_timeout=config.connect_timeout, tls=config.tls())
        connection = ldap3.Connection(
            server,
            user=config.bind_dn,
            password=password,
            raise_exceptions=True,
            receive_timeout=config.receive_timeout,
            auto_referrals=False,
        )
        with _classified(f"LDAP bind as {config.bind_dn}", config.url):
            connection.open()
            if config.start_tls:
                connection.start_tls()  # before the bind: the password only ever travels encrypted
            connection.bind()
        try:
            yield connection
        finally:
            with suppress(LDAPException):
                connection.unbind()

    def entries(
        self, connection: Any, base: str, search_filter: str, attributes: list[str], *, scope: str = ldap3.SUBTREE
    ) -> Iterator[_Entry]:
        """A paged search's entries (referrals are skipped: the configured bases are authoritative)."""
        with _classified(f"LDAP search under {base}", self.config.url):
            try:
                for response in connection.extend.standard.paged_search(
                    base,
                    search_filter,
                    scope,
                    attributes=attributes,
                    paged_size=self.config.page_size,
                    generator=True,
                ):
                    if response.get("type") == "searchResEntry":
                        values = {key.lower(): list(found) for key, found in response["raw_attributes"].items()}
                        yield _Entry(response["dn"], values)
            except LDAPOperationResult as error:
                if error.result == _NO_SUCH_OBJECT:
                    raise PermanentError(f"{base} does not exist in the LDAP directory at {self.config.url}") from error
                raise

    def users(self, connection: Any, attributes: Iterable[str] = ()) -> list[_Entry]:
        """Every user under users_base that has an email, with the mail attribute and ``attributes``."""
        config = self.config
        wanted = [config.mail_attribute, *attributes]
        return [
            entry
            for entry in self.entries(connection, config.users_base, config.user_filter, wanted)
            if entry.first(config.mail_attribute)
        ]

    def groups(self, connection: Any, names: Iterable[str] | None = None) -> Iterator[_Entry]:
        """Groups under groups_base (only those called ``names`` when given), with cn, description, members."""
        config = self.config
        search_filter = config.group_filter
        if names is not None:
            wanted = "".join(f"(cn={escape_filter_chars(name)})" for name in names)
            search_filter = f"(&{search_filter}(|{wanted}))"
        return self.entries(
            connection, config.groups_base, search_filter, ["cn", "description", "member", *_ADMIN_MARKS, *_ENTRY_IDS]
        )

    def bind_dn_groups(self, connection: Any) -> set[str]:
        """The DN keys of the groups under groups_base the bind DN is a direct member of."""
        config = self.config
        search_filter = f"(&{config.group_filter}(member={escape_filter_chars(config.bind_dn)}))"
        return {_dn_key(entry.dn) for entry in self.entries(connection, config.groups_base, search_filter, ["1.1"])}

    def privileged(self, group: _Entry, bind_groups: set[str]) -> str | None:
        """Why ``group`` is a directory admin group (never requestable unless allowed), or None."""
        reasons = []
        if (group.first("cn") or "").lower() in ADMIN_GROUPS:
            reasons.append("a built-in administrators group")
        if (group.first("adminCount") or "0").strip() not in ("", "0"):
            reasons.append("protected by AdminSDHolder (adminCount)")
        if (group.first("isCriticalSystemObject") or "").upper() == "TRUE":
            reasons.append("a critical system object")
        if _dn_key(group.dn) in bind_groups:
            reasons.append(f"Lapse's own bind DN {self.config.bind_dn} is a member")
        return "; ".join(reasons) or None

    def members(self, connection: Any, group: _Entry) -> list[str]:
        """The group's ``member`` values, following AD's ranges past the first 1,500."""
        members = group.all("member")
        ranged = group.ranged("member")
        while ranged is not None:
            span, values = ranged
            members += values
            end = span.rpartition("-")[2]
            if end == "*" or not values:
                break
            following = f"member;range={int(end) + 1}-*"
            entry = next(self.entries(connection, group.dn, "(objectClass=*)", [following], scope=ldap3.BASE), None)
            ranged = entry.ranged("member") if entry else None
        placeholder = _dn_key(self.config.placeholder_member)
        return [member for member in members if _dn_key(member) != placeholder]

    def modify(self, connection: Any, dn: str, changes: list[tuple[str, str]], *, tolerate: set[int]) -> int:
        """Change ``member`` values of ``dn`` in one operation; returns the result code (0, or a tolerated one)."""
        by_operation = [(operation, [value]) for operation, value in changes]
        with _classified(f"LDAP change of {dn}", self.config.url):
            try:
                connection.modify(dn, {"member": by_operation}, controls=[_PERMISSIVE_MODIFY])
            except LDAPOperationResult as error:
                if error.result in tolerate:
                    return int(error.result)
                raise
        return 0


class LdapConnector(ConnectorBase):
    """Roles are groups under groups_base (``groupOfNames`` or AD ``group``); accounts are user DNs.

    A user's account is the DN of the entry under users_base whose mail attribute is their
    email; the integration's ``account`` rule is not used, since the directory itself links
    people to entries. Granting adds the DN to the group's ``member``; revoking removes it,
    writing ``placeholder_member`` when the last member of a ``groupOfNames`` goes.
    """

    discovers = True
    accounts_by_rule = False
    per_grant_accounts = False
    """list_grants reports each member's email, and account_for is a search: never run it for every user."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = LdapConfig.model_validate(dict(config))
        self._directory = _Directory(self.config)
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
            users = {_dn_key(user.dn): user for user in self._directory.users(connection)}
            for group in self._directory.groups(connection, names=[role.name for role in by_name.values()]):
                role = by_name.get((group.first("cn") or "").lower())
                if role is None:
                    continue
                for member in self._directory.members(connection, group):
                    user = users.get(_dn_key(member))
                    # The user's DN as the directory spells it, so it equals what account_for returns.
                    account, email = (user.dn, (user.first(mail) or "").lower()) if user else (member, None)
                    held.append(HeldRole(account=account, resource=role.resource, role=role.name, email=email))
        return held

    def _group(self, connection: Any, target: Target, *, granting: bool = False) -> _Entry:
        config = self.config
        search_filter = f"(&{config.group_filter}(cn={escape_filter_chars(target.role)}))"
        attributes = ["objectClass", "cn", *_ADMIN_MARKS]
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
        if not _is_dn(account):
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
                self._directory.modify(connection, group.dn, placeholder, tolerate={_NO_SUCH_ATTRIBUTE})
        return None

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        """Membership has no end date of its own here: the revoke at expiry ends it."""
        return None

    def revoke(self, account: str, target: Target) -> None:
        self._check_account(account)
        with self._directory.connect() as connection:
            group = self._group(connection, target)
            tolerate = {_NO_SUCH_ATTRIBUTE, _OBJECT_CLASS_VIOLATION}
            result = self._directory.modify(connection, group.dn, [(ldap3.MODIFY_DELETE, account)], tolerate=tolerate)
            if result == _OBJECT_CLASS_VIOLATION and _requires_member(group):
                # The account was the last member: swap in the placeholder in one atomic change.
                swap = [(ldap3.MODIFY_ADD, self.config.placeholder_member), (ldap3.MODIFY_DELETE, account)]
                self._directory.modify(connection, group.dn, swap, tolerate={_NO_SUCH_ATTRIBUTE})
            elif result == _OBJECT_CLASS_VIOLATION:
                raise PermanentError(f"the directory refused to remove the last member of {group.dn}")


_ADMIN_MARKS = ("adminCount", "isCriticalSystemObject")
"""Active Directory's marks of a protected or system group (other directories do not return them)."""

ADMIN_GROUPS = frozenset(
    name.lower()
    for name in (
        "Administrators",
        "Domain Admins",
        "Enterprise Admins",
        "Schema Admins",
        "Account Operators",
        "Backup Operators",
        "Server Operators",
        "Print Operators",
        "Replicator",
        "Domain Controllers",
        "Read-only Domain Controllers",
        "Enterprise Read-only Domain Controllers",
        "Key Admins",
        "Enterprise Key Admins",
        "Group Policy Creator Owners",
        "DnsAdmins",
        "Cert Publishers",
    )
)
"""Built-in administrators groups (Active Directory's), refused by name whatever the directory says."""

_ALREADY_THERE = {_VALUE_EXISTS, _ENTRY_EXISTS}
"""Adding a present member: OpenLDAP says attributeOrValueExists, AD entryAlreadyExists."""


def _requires_member(group: _Entry) -> bool:
    return "groupofnames" in {value.lower() for value in group.all("objectClass")}


def _server_name(root: _Entry | None) -> str:
    if root is None:
        return "LDAP server"
    vendor = " ".join(filter(None, (root.first("vendorName"), root.first("vendorVersion"))))
    if vendor:
        return vendor
    if "openldaprootdse" in {value.lower() for value in root.all("objectClass")}:
        return "OpenLDAP"
    return "LDAP server"


_ENTRY_IDS = ("entryUUID", "objectGUID")
"""An entry's permanent identity (OpenLDAP / 389 DS, Active Directory): it survives renames and moves."""


def _entry_id(entry: _Entry) -> str:
    """The entry's external id: its entryUUID, its objectGUID (as a UUID), else its DN key."""
    uuid_value = entry.first("entryUUID")
    if uuid_value:
        return uuid_value.strip().lower()
    guid = entry.values.get("objectguid")
    if guid and len(guid[0]) == 16:
        return str(uuid.UUID(bytes_le=bytes(guid[0])))
    return _dn_key(entry.dn)


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
    """The entry's permanent identity (``_entry_id``); empty for the organisation file's users."""


@dataclass(frozen=True)
class DirectoryGroup:
    dn: str
    name: str
    description: str
    member_emails: tuple[str, ...]
    """Direct members that are users with an email; nested groups and other entries are left out."""
    external_id: str = ""
    """The entry's permanent identity (``_entry_id``): the group's key in Lapse, with the source. The name
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
        self._directory = _Directory(self.config)

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
        extra = [config.name_attribute, config.manager_attribute, "cn", *_ENTRY_IDS]
        if config.disabled_attribute:
            extra.append(config.disabled_attribute)
        entries = self._directory.users(connection, extra)
        emails = {_dn_key(entry.dn): (entry.first(config.mail_attribute) or "").lower() for entry in entries}
        users: dict[str, DirectoryUser] = {}
        for entry in entries:
            key = _dn_key(entry.dn)
            manager = entry.first(config.manager_attribute)
            users[key] = DirectoryUser(
                dn=entry.dn,
                email=emails[key],
                name=entry.first(config.name_attribute) or entry.first("cn") or emails[key],
                manager_email=emails.get(_dn_key(manager)) if manager else None,
                disabled=self._disabled(entry),
                external_id=_entry_id(entry),
            )
        return users

    def _disabled(self, entry: _Entry) -> bool:
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
                users[key].email for key in map(_dn_key, self._directory.members(connection, group)) if key in users
            ]
            yield DirectoryGroup(
                dn=group.dn,
                name=group.first("cn") or group.dn,
                description=group.first("description") or "",
                member_emails=tuple(sorted(set(emails))),
                external_id=_entry_id(group),
            )

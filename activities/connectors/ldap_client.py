"""One LDAP directory as the LDAP connector and the identity source both use it: bind, search, change.

The bind goes over TLS first; searches are paged and follow AD's ranged ``member`` values; ``member``
changes are one operation each; ldap3's errors are sorted into retryable and permanent ones.

Every read is a paged search, so directories with more entries than the server's size limit
(AD's 1,000, OpenLDAP's 500) are read whole.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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

from access.connectors import PermanentError, RetryableError
from activities.connectors.ldap_config import LdapConfig
from activities.connectors.secrets import check_host

_BUSY, _UNAVAILABLE, _TIME_LIMIT_EXCEEDED = 51, 52, 3
_RETRYABLE_RESULTS = {_BUSY, _UNAVAILABLE, _TIME_LIMIT_EXCEEDED}
_NO_SUCH_OBJECT = 32
NO_SUCH_ATTRIBUTE, VALUE_EXISTS, ENTRY_EXISTS, OBJECT_CLASS_VIOLATION = 16, 20, 68, 65
_PERMISSIVE_MODIFY = ("1.2.840.113556.1.4.1413", False, None)
"""Makes adding a present value or deleting an absent one succeed (AD and OpenLDAP honour it)."""

ADMIN_MARKS = ("adminCount", "isCriticalSystemObject")
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

ENTRY_IDS = ("entryUUID", "objectGUID")
"""An entry's permanent identity (OpenLDAP / 389 DS, Active Directory): it survives renames and moves."""


def _words(description: str) -> str:
    """``insufficientAccessRights`` → ``insufficient access rights``: ldap3 names results in camel case."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", description).lower()


@contextmanager
def classified(doing: str, url: str) -> Iterator[None]:
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
def dn_key(dn: str) -> str:
    """A DN in a form that compares equal however it was spaced or cased (as LDAP compares it).

    Cached: discovery meets each member DN once per group it is in, and parsing is slow.
    """
    try:
        return ",".join(f"{kind.lower()}={value.lower()}" for kind, value, _ in parse_dn(dn, strip=True))
    except LDAPInvalidDnError:
        return dn.strip().lower()


def is_dn(dn: str) -> bool:
    try:
        return bool(parse_dn(dn))
    except LDAPInvalidDnError:
        return False


@dataclass(frozen=True)
class Entry:
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


class LdapClient:
    """One directory, as the connector and the identity source read and change it."""

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
        with classified(f"LDAP bind as {config.bind_dn}", config.url):
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
    ) -> Iterator[Entry]:
        """A paged search's entries (referrals are skipped: the configured bases are authoritative)."""
        with classified(f"LDAP search under {base}", self.config.url):
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
                        yield Entry(response["dn"], values)
            except LDAPOperationResult as error:
                if error.result == _NO_SUCH_OBJECT:
                    raise PermanentError(f"{base} does not exist in the LDAP directory at {self.config.url}") from error
                raise

    def users(self, connection: Any, attributes: Iterable[str] = ()) -> list[Entry]:
        """Every user under users_base that has an email, with the mail attribute and ``attributes``."""
        config = self.config
        wanted = [config.mail_attribute, *attributes]
        return [
            entry
            for entry in self.entries(connection, config.users_base, config.user_filter, wanted)
            if entry.first(config.mail_attribute)
        ]

    def groups(self, connection: Any, names: Iterable[str] | None = None) -> Iterator[Entry]:
        """Groups under groups_base (only those called ``names`` when given), with cn, description, members."""
        config = self.config
        search_filter = config.group_filter
        if names is not None:
            wanted = "".join(f"(cn={escape_filter_chars(name)})" for name in names)
            search_filter = f"(&{search_filter}(|{wanted}))"
        return self.entries(
            connection, config.groups_base, search_filter, ["cn", "description", "member", *ADMIN_MARKS, *ENTRY_IDS]
        )

    def bind_dn_groups(self, connection: Any) -> set[str]:
        """The DN keys of the groups under groups_base the bind DN is a direct member of."""
        config = self.config
        search_filter = f"(&{config.group_filter}(member={escape_filter_chars(config.bind_dn)}))"
        return {dn_key(entry.dn) for entry in self.entries(connection, config.groups_base, search_filter, ["1.1"])}

    def privileged(self, group: Entry, bind_groups: set[str]) -> str | None:
        """Why ``group`` is a directory admin group (never requestable unless allowed), or None."""
        reasons = []
        if (group.first("cn") or "").lower() in ADMIN_GROUPS:
            reasons.append("a built-in administrators group")
        if (group.first("adminCount") or "0").strip() not in ("", "0"):
            reasons.append("protected by AdminSDHolder (adminCount)")
        if (group.first("isCriticalSystemObject") or "").upper() == "TRUE":
            reasons.append("a critical system object")
        if dn_key(group.dn) in bind_groups:
            reasons.append(f"Lapse's own bind DN {self.config.bind_dn} is a member")
        return "; ".join(reasons) or None

    def members(self, connection: Any, group: Entry) -> list[str]:
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
        placeholder = dn_key(self.config.placeholder_member)
        return [member for member in members if dn_key(member) != placeholder]

    def modify(self, connection: Any, dn: str, changes: list[tuple[str, str]], *, tolerate: set[int]) -> int:
        """Change ``member`` values of ``dn`` in one operation; returns the result code (0, or a tolerated one)."""
        by_operation = [(operation, [value]) for operation, value in changes]
        with classified(f"LDAP change of {dn}", self.config.url):
            try:
                connection.modify(dn, {"member": by_operation}, controls=[_PERMISSIVE_MODIFY])
            except LDAPOperationResult as error:
                if error.result in tolerate:
                    return int(error.result)
                raise
        return 0


def entry_id(entry: Entry) -> str:
    """The entry's external id: its entryUUID, its objectGUID (as a UUID), else its DN key."""
    uuid_value = entry.first("entryUUID")
    if uuid_value:
        return uuid_value.strip().lower()
    guid = entry.values.get("objectguid")
    if guid and len(guid[0]) == 16:
        return str(uuid.UUID(bytes_le=bytes(guid[0])))
    return dn_key(entry.dn)

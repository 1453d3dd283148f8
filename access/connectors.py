"""The connector interface: what activities ask of a target system, its errors, and the
configuration every connector shares.

A connector is built from an integration's configuration and talks to one target system: it tests the
connection, discovers resources and roles, lists who holds which role, and grants and revokes one role
for one account. Grant and revoke are idempotent: granting what is already there, or revoking what is
already gone, is success. Only activities hold connectors; this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    pass


class ConnectorError(Exception):
    """A target system refused or failed a call."""

    retryable = True


class RetryableError(ConnectorError):
    """Worth trying again: the network, a lock timeout, the target restarting."""


class PermanentError(ConnectorError):
    """Trying again will not help (bad credentials, unknown role) until someone fixes it."""

    retryable = False


@dataclass(frozen=True)
class Target:
    """A role in a target system, as a connector sees it."""

    integration: str
    resource: str
    role: str
    config: Mapping[str, Any]

    @property
    def path(self) -> str:
        return f"{self.integration}/{self.resource}/{self.role}"


@dataclass(frozen=True)
class DiscoveredRole:
    resource: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Discovery:
    """What a target offers: resources (name → description) and the roles in them."""

    resources: dict[str, str]
    roles: list[DiscoveredRole]
    warnings: list[str] = field(default_factory=list)
    """What an admin should know: privileged roles left out of the catalog, or put in it by ``allow_privileged``."""


@dataclass(frozen=True)
class HeldRole:
    """One account holding one role in the target, as the target reports it."""

    account: str
    resource: str
    role: str
    email: str | None = None
    """The account's email when the target knows it (a directory's ``mail``); else the account rule links it."""
    last_used: datetime | None = None
    """When the account was last seen using its access, for targets that can tell (an optional capability): a
    PostgreSQL login with a live session now, Active Directory's ``lastLogonTimestamp``. None: the target
    cannot tell, and reviewers read "unknown". A login's use counts for every role it holds in the target."""


@dataclass(frozen=True)
class Credentials:
    """A login made for one grant (ephemeral-credentials mode): shown once, never logged."""

    username: str
    password: str
    expires_at: datetime | None
    dsn_hint: str | None = None
    """How to connect with them, without the password (e.g. ``postgresql://user@host:5432/db``)."""


class Connector(Protocol):
    discovers: bool
    """Whether the target has a catalog and grants of its own to discover (the ledger has none)."""
    accounts_by_rule: bool
    """Accounts follow from emails by the account rule, so discovery links them by applying it to every
    user; otherwise only the email a target reports for an account links it."""
    per_grant_accounts: bool
    """Each grant gets an account of its own (ephemeral credentials), named after the user's account and
    the request, so overlapping grants never share one; ``grant`` makes it and ``revoke`` removes it."""

    def account_for(self, email: str) -> str:
        """The account a user has in the target."""
        ...

    def test_connection(self) -> str:
        """A one-line description of the target (its version), or a ConnectorError saying what is wrong."""
        ...

    def discover(self) -> Discovery: ...

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        """Who holds each of ``roles`` now, and when each account was last seen in use where the target can tell."""
        ...

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        """Give ``account`` the role; returns credentials only in ephemeral-credentials mode."""
        ...

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        """Move the end the target itself enforces (a login's expiry) after an extension; most do nothing."""
        ...

    def revoke(self, account: str, target: Target) -> None: ...


class AccountRule(BaseModel):
    """How a user's email becomes their account in a target.

    ``template`` takes ``{email}``, ``{local_part}`` and ``{domain}``; e.g. ``{local_part}``
    (the default), ``{email}``, or ``ext_{local_part}``.
    """

    model_config = ConfigDict(extra="forbid")

    template: str = "{local_part}"
    lowercase: bool = True

    def apply(self, email: str) -> str:
        local_part, _, domain = email.partition("@")
        account = self.template.format(email=email, local_part=local_part, domain=domain)
        return account.lower() if self.lowercase else account


class ConnectorConfig(BaseModel):
    """What every connector's configuration has: the account rule and the ``insecure`` opt-in.

    Unknown keys are an error; the values given are never quoted in errors (they may be secrets pasted
    where a reference belongs).
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    account: AccountRule = Field(default_factory=AccountRule)
    insecure: bool = False
    """Allow a connection that is not verified TLS (``ldap://``, ``http://``, a PostgreSQL DSN without
    ``sslmode=verify-full``, ``verify_tls: false``). Off by default; the connection test and the
    integrations API and CLI flag an integration that sets it. Loopback targets need it too."""

    def insecure_note(self) -> str:
        """What ``test_connection`` appends for an integration that allows an unverified connection."""
        return " [INSECURE: insecure: true allows plaintext or unverified TLS to this target]" if self.insecure else ""

"""The connector interface between activities and target systems, and the built-in ledger.

A connector is built from an integration's configuration and talks to one target system:
it tests the connection, discovers resources and roles, lists who holds which role, and
grants and revokes one role for one account. Grant and revoke are idempotent: granting
what is already there, or revoking what is already gone, is success.

Only activities use connectors. Secrets are references in the configuration (an
environment variable or a file), resolved here on use: never in the app DB, workflow
history or search attributes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


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


@dataclass(frozen=True)
class HeldRole:
    """One account holding one role in the target, as the target reports it."""

    account: str
    resource: str
    role: str
    email: str | None = None
    """The account's email when the target knows it (a directory's ``mail``); else the account rule links it."""


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
        """Who holds each of ``roles`` now."""
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
    """What every connector's configuration has: the account rule. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    account: AccountRule = Field(default_factory=AccountRule)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EnvName = Annotated[
    str,
    Field(
        pattern=_ENV_NAME.pattern,
        description="The name of an environment variable holding the secret (a reference, never the value).",
    ),
]


def secret(*, env: str | None, file: Path | None, what: str) -> str:
    """Resolve a secret reference: an environment variable's value or a file's content."""
    if env is not None:
        if not _ENV_NAME.match(env):
            raise PermanentError(f"{what}: {env!r} is not an environment variable name (give a reference, not a value)")
        value = os.environ.get(env)
        if not value:
            raise PermanentError(f"environment variable {env} ({what}) is not set on the worker")
        return value
    if file is not None:
        try:
            return file.read_text().strip()
        except OSError as error:
            raise PermanentError(f"cannot read {what} from {file}: {error}") from error
    raise PermanentError(f"no {what} configured")


class LedgerConnector:
    """For systems without a connector yet: Lapse's own grants ledger is the access record.

    Granting and revoking change nothing outside Lapse; the ledger rows the activities
    write are the grant, and operators act on them (or on the audit log) by hand.
    """

    discovers = False
    accounts_by_rule = True
    per_grant_accounts = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = ConnectorConfig.model_validate(dict(config or {}))

    def account_for(self, email: str) -> str:
        return email

    def test_connection(self) -> str:
        return "the Lapse ledger (no external system)"

    def discover(self) -> Discovery:
        return Discovery(resources={}, roles=[])

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        return []

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        return None

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        return None

    def revoke(self, account: str, target: Target) -> None:
        return None


ConnectorFactory = Callable[[Mapping[str, Any]], Connector]
"""Builds a connector from an integration's configuration."""


def _postgres(config: Mapping[str, Any]) -> Connector:
    from activities.postgres import PostgresConnector  # imported on use: each driver loads only when needed

    return PostgresConnector(config)


def _ldap(config: Mapping[str, Any]) -> Connector:
    from activities.ldap import LdapConnector

    return LdapConnector(config)


def _scim(config: Mapping[str, Any]) -> Connector:
    from activities.scim import ScimConnector

    return ScimConnector(config)


BUILT_IN: dict[str, ConnectorFactory] = {"ledger": LedgerConnector, "postgres": _postgres, "ldap": _ldap, "scim": _scim}
"""Connector factories by integration kind."""


def built(
    kind: str, config: Mapping[str, Any], connectors: Mapping[str, ConnectorFactory] = BUILT_IN
) -> Connector | None:
    """The connector for ``kind`` (no I/O), or None when the kind is unknown or the configuration is invalid."""
    factory = connectors.get(kind)
    if factory is None:
        return None
    try:
        return factory(config)
    except ValueError:
        return None


def check_config(kind: str, config: Mapping[str, Any], connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
    """Build the connector once to validate its configuration; raises ValueError naming the problem."""
    factory = connectors.get(kind)
    if factory is None:
        raise ValueError(f"unknown integration kind {kind!r} (known: {', '.join(sorted(connectors))})")
    factory(config)

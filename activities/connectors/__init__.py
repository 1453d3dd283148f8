"""Connector drivers by integration kind, and the one way to build an integration's connector.

A connector is built from an integration's configuration and talks to one target system:
it tests the connection, discovers resources and roles, lists who holds which role, and
grants and revokes one role for one account. Grant and revoke are idempotent: granting
what is already there, or revoking what is already gone, is success.

Only activities use connectors. Secrets are references in the configuration (an
environment variable or a file), resolved here on use: never in the app DB, workflow
history or search attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from access.connectors import Connector, PermanentError
from activities.connectors.ledger import LedgerConnector
from activities.metrics import metered
from store import logs

ConnectorFactory = Callable[[Mapping[str, Any]], Connector]
"""Builds a connector from an integration's configuration."""

T = TypeVar("T")


def _postgres(config: Mapping[str, Any]) -> Connector:
    from activities.connectors.postgres import PostgresConnector  # imported on use: each driver loads only when needed

    return PostgresConnector(config)


def _ldap(config: Mapping[str, Any]) -> Connector:
    from activities.connectors.ldap import LdapConnector

    return LdapConnector(config)


def _scim(config: Mapping[str, Any]) -> Connector:
    from activities.connectors.scim import ScimConnector

    return ScimConnector(config)


BUILT_IN: dict[str, ConnectorFactory] = {"ledger": LedgerConnector, "postgres": _postgres, "ldap": _ldap, "scim": _scim}
"""Connector factories by integration kind."""


class IntegrationSettings(Protocol):
    """What building a connector needs of an integration (the app DB's ``Integration`` row has it)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def config(self) -> Mapping[str, Any]: ...


class InvalidIntegration(PermanentError):
    """An integration's connector cannot be built: this worker has no connector of its kind, or its
    configuration is invalid. Retrying cannot help until someone fixes the integration."""


def connector_for(integration: IntegrationSettings, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> Connector:
    """A stored integration's connector (no I/O); an unknown kind or an invalid configuration raises
    InvalidIntegration, naming the integration and what is wrong. Activities get every connector here."""
    logs.integration.set(integration.name)  # the activity's remaining log lines name it (store.logs)
    connector = from_config(integration, lambda config: check_config(integration.kind, config, connectors))
    # Its calls measured (activities.metrics); the ledger's, which call nothing outside, left as they are.
    return connector if isinstance(connector, LedgerConnector) else metered(connector, integration.name)


def from_config(integration: IntegrationSettings, factory: Callable[[Mapping[str, Any]], T]) -> T:
    """``factory`` built from the integration's configuration (a connector, or a directory reader); an unknown
    kind or an invalid configuration raises InvalidIntegration naming the integration and each field at fault."""
    try:
        return factory(integration.config)
    except ValidationError as error:
        # Fields and messages only: the configuration's values may be secrets pasted where a reference belongs.
        problems = "; ".join(f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidIntegration(f"integration {integration.name} is misconfigured: {problems}") from None
    except ValueError as error:
        raise InvalidIntegration(f"integration {integration.name} is misconfigured: {error}") from None


def check_config(
    kind: str, config: Mapping[str, Any], connectors: Mapping[str, ConnectorFactory] = BUILT_IN
) -> Connector:
    """Build a connector from a kind and a configuration not stored yet (no I/O), to check them: raises
    ValueError for an unknown kind and pydantic's ValidationError (a ValueError) for the configuration,
    whose fields a form or an organisation file's check lists one by one. The one place a connector is made."""
    factory = connectors.get(kind)
    if factory is None:
        raise ValueError(f"unknown integration kind {kind!r} (known: {', '.join(sorted(connectors))})")
    return factory(config)


def built(
    kind: str, config: Mapping[str, Any], connectors: Mapping[str, ConnectorFactory] = BUILT_IN
) -> Connector | None:
    """``check_config``'s connector, or None where it refuses: for callers that only ask what a connector does
    (discovers, makes a login per grant) and take one that cannot be built to do nothing."""
    try:
        return check_config(kind, config, connectors)
    except ValueError:
        return None

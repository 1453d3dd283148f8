"""Connector drivers by integration kind, built from an integration's configuration.

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
from typing import Any

from access.connectors import Connector
from activities.connectors.ledger import LedgerConnector

ConnectorFactory = Callable[[Mapping[str, Any]], Connector]
"""Builds a connector from an integration's configuration."""


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

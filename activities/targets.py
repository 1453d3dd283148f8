"""How activities reach a target: a role path's integration, target and connector, and failures as activity errors.

Every connector an activity uses is built by ``activities.connectors.connector_for``, so all fail
alike: an unknown kind or an invalid configuration is final, naming the integration. A role gone from
the catalog, or an integration that no longer exists, is final here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from access.connectors import Connector, ConnectorError, Target
from activities.connectors import ConnectorFactory, InvalidIntegration, connector_for
from store import catalog
from store.db import lock
from store.tables import Integration, Resource


class ResolvedTarget(NamedTuple):
    integration: Integration
    target: Target
    connector: Connector


def as_activity_error(error: ConnectorError) -> ApplicationError:
    """A connector failure as an activity failure: retried when it may pass, final when it will not."""
    return ApplicationError(str(error), type=type(error).__name__, non_retryable=not error.retryable)


def integration_named(session: Session, name: str) -> Integration:
    """The integration called ``name``; none is a final failure."""
    integration = session.exec(select(Integration).where(Integration.name == name)).first()
    if integration is None:
        raise ApplicationError(f"no integration {name!r}", type="UnknownIntegration", non_retryable=True)
    return integration


def resolve_target(session: Session, path: str, connectors: Mapping[str, ConnectorFactory]) -> ResolvedTarget:
    """A role path's integration, its target as a connector sees it, and the connector; a role gone from the
    catalog, an unknown kind or an invalid configuration is a final failure, saying why."""
    role = catalog.find_role(session, path)
    resource = session.get(Resource, role.resource_id) if role else None
    integration = session.get(Integration, resource.integration_id) if resource else None
    if role is None or resource is None or integration is None:
        raise ApplicationError(f"role {path} no longer exists", type="UnknownRole", non_retryable=True)
    target = Target(integration=integration.name, resource=resource.name, role=role.name, config=integration.config)
    try:
        connector = connector_for(integration, connectors)
    except InvalidIntegration as error:
        raise as_activity_error(error) from error
    return ResolvedTarget(integration, target, connector)


def hold_integration(session: Session, name: str) -> None:
    """Hold the integration's lock shared for a grant or revoke: discovery holds it exclusively while it
    compares the target with the ledger, so it never sees one half-done."""
    lock(session, "integration", name, shared=True)

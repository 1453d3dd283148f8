"""Drift: revoke the grants of JIT-only roles that discovery found made outside Lapse.

Each is claimed (``revoking``, or ended at once when a Lapse grant covers the account), revoked in the
target with no transaction open, and recorded (``store.ledger``): a retry after a crash between the
steps revokes again, which is success.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select
from temporalio import activity

from access import names
from access.connectors import ConnectorError, Target
from access.discovery import DriftItem, RemediateInput
from access.grants import GrantPath
from access.types import AuditEntry
from activities.connectors import BUILT_IN, ConnectorFactory, connector_for
from activities.targets import as_activity_error, hold_integration, integration_named
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.ledger import claim_revoke, end
from store.tables import Grant


class DriftActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.remediate_drift]

    @activity.defn(name=names.REMEDIATE_DRIFT)
    def remediate_drift(self, input: RemediateInput) -> int:
        """Revoke external grants of JIT-only roles; returns how many were ended.

        Each is claimed (``revoking``, or ended at once when a Lapse grant covers the account), revoked in
        the target with no transaction open, and recorded (``store.ledger``): a retry after a crash between
        the steps revokes again, which is success.
        """
        ended = 0
        try:
            for item in input.items:
                activity.heartbeat(ended)
                if self._remediate(input.integration, item):
                    ended += 1
        except ConnectorError as error:  # the target's refusal, or an integration no connector can be built for
            raise as_activity_error(error) from error
        return ended

    def _remediate(self, integration_name: str, item: DriftItem) -> bool:
        """Claim, revoke and record one drifted grant; False when an earlier attempt already ended it."""
        with session_scope(self._db_url) as session:
            hold_integration(session, integration_name)
            lock(session, item.account, item.role)
            external = session.exec(
                select(Grant).where(
                    Grant.account == item.account,
                    Grant.role == item.role,
                    Grant.path == GrantPath.EXTERNAL,
                    col(Grant.active).is_(True),
                )
            ).first()
            if external is None:
                return False
            now = datetime.now(UTC)
            if not claim_revoke(session, external, now):
                _drift_revoked(session, external, item.user, covered=True, now=now)
                return True
            external_id = external.id
            integration = integration_named(session, integration_name)
            connector = connector_for(integration, self._connectors)
        _, resource, role = item.role.split("/", 2)
        connector.revoke(item.account, Target(integration=integration.name, resource=resource, role=role, config={}))
        with session_scope(self._db_url) as session:
            lock(session, item.account, item.role)
            grant = session.get(Grant, external_id)
            if grant is not None and grant.active:
                now = datetime.now(UTC)
                end(session, grant, now)
                _drift_revoked(session, grant, item.user, covered=False, now=now)
        return True


def _drift_revoked(session: Session, grant: Grant, user: str | None, *, covered: bool, now: datetime) -> None:
    reason = "the role is JIT-only and this grant was made outside Lapse"
    if covered:
        reason += "; a Lapse grant now covers the account, so access stays until that one ends"
    entry = AuditEntry(
        actor="lapse",
        action="drift.revoked",
        target=grant.role,
        reason=reason,
        details={"account": grant.account, "user": user},
        at=now,
    )
    append_audit(session, [entry])

"""Activities of the access-request workflow: bookkeeping in the app DB and the grant ledger."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, func, or_, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import catalog, policy
from access.db import append_audit, lock, session_scope
from access.tables import AccessRequest, Grant, Integration, Resource
from access.types import (
    GrantInput,
    GrantResult,
    RecordInput,
    ResolveInput,
    RevokeInput,
    RevokeResult,
)
from activities.connectors import BUILT_IN, Connector, ConnectorError, ConnectorFactory, Target
from workflows import names


class RequestActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_request, self.resolve_approvers, self.provision_grant, self.revoke_grant]

    @activity.defn(name=names.RECORD_REQUEST)
    def record_request(self, input: RecordInput) -> None:
        """Write the request's latest status and its new audit events, in one transaction."""
        status = input.status
        with session_scope(self._db_url) as session:
            row = session.get(AccessRequest, status.id) or AccessRequest(
                id=status.id,
                requester=status.requester,
                role=status.role,
                state=status.state,
                created_at=status.created_at,
            )
            row.state = status.state.value
            row.expires_at = status.expires_at
            row.ended_at = status.ended_at
            row.status = status.model_dump(mode="json")
            session.add(row)
            if status.expires_at is not None:
                grant = session.exec(select(Grant).where(Grant.request_id == status.id)).first()
                if grant is not None and grant.active:
                    grant.expires_at = status.expires_at
                    session.add(grant)
            append_audit(session, input.events)

    @activity.defn(name=names.RESOLVE_APPROVERS)
    def resolve_approvers(self, input: ResolveInput) -> list[str]:
        """Who may decide a step that is opening now (the organisation may have changed)."""
        with session_scope(self._db_url) as session:
            user = catalog.find_user(session, input.requester)
            role = catalog.find_role(session, input.role)
            if user is None or role is None:
                return []
            context = catalog.policy_context(session, user, role, catalog.policy_for(session, role))
            return policy.resolve_approvers(input.approvers, context)

    @activity.defn(name=names.PROVISION_GRANT)
    def provision_grant(self, input: GrantInput) -> GrantResult:
        """Record the grant in the ledger and grant the role in the target, idempotently.

        When another active grant already covers the account and role, the target is not
        called again: the ledger counts grants per account and role.
        """
        with session_scope(self._db_url) as session:
            target, connector = self._target(session, input.role)
            account = connector.account_for(input.requester)
            lock(session, account, input.role)
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            others = _active_grants(session, account, input.role, besides=input.request_id)
            if grant is None:
                # The clock starts now, at the grant, so the target can enforce the same end.
                now = datetime.now(UTC)
                grant = Grant(
                    account=account,
                    role=input.role,
                    user_email=input.requester,
                    path="jit",
                    request_id=input.request_id,
                    granted_at=now,
                    expires_at=now + input.duration if input.duration is not None else None,
                )
                session.add(grant)
                session.flush()
            expires_at = grant.expires_at
            if not others:
                _call(lambda: connector.grant(account, target, expires_at))
            return GrantResult(account=account, granted_at=grant.granted_at, expires_at=expires_at, shared=bool(others))

    @activity.defn(name=names.REVOKE_GRANT)
    def revoke_grant(self, input: RevokeInput) -> RevokeResult:
        """End the request's grant; revoke in the target unless another active grant remains."""
        with session_scope(self._db_url) as session:
            target, connector = self._target(session, input.role)
            account = connector.account_for(input.requester)
            lock(session, account, input.role)
            now = datetime.now(UTC)
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            if grant is not None and grant.active:
                grant.active = False
                grant.ended_at = now
                session.add(grant)
                session.flush()
            others = _active_grants(session, account, input.role, besides=input.request_id)
            if not others:
                # Also when no ledger row exists: a grant may have reached the target just before
                # its provisioning was interrupted. Revoking what is not there is success.
                _call(lambda: connector.revoke(account, target))
            return RevokeResult(revoked_at=now, still_held=bool(others))

    def _target(self, session: Session, path: str) -> tuple[Target, Connector]:
        role = catalog.find_role(session, path)
        if role is None:
            raise ApplicationError(f"role {path} no longer exists", type="UnknownRole", non_retryable=True)
        resource = session.get(Resource, role.resource_id)
        assert resource is not None
        integration = session.get(Integration, resource.integration_id)
        assert integration is not None
        factory = self._connectors.get(integration.kind)
        if factory is None:
            raise ApplicationError(
                f"integration {integration.name} has kind {integration.kind!r}, for which this worker has no connector",
                type="UnknownConnector",
                non_retryable=True,
            )
        target = Target(integration=integration.name, resource=resource.name, role=role.name, config=integration.config)
        return target, factory(target)


def _active_grants(session: Session, account: str, role: str, *, besides: str) -> int:
    """Active grants of ``role`` to ``account`` other than request ``besides``'s own, by any path."""
    query = (
        select(func.count())
        .select_from(Grant)
        .where(
            Grant.account == account,
            Grant.role == role,
            col(Grant.active).is_(True),
            or_(col(Grant.request_id).is_(None), Grant.request_id != besides),
        )
    )
    return int(session.exec(query).one())


def _call(operation: Callable[[], None]) -> None:
    """Run a connector call, turning its errors into retryable or final activity failures."""
    try:
        operation()
    except ConnectorError as error:
        raise ApplicationError(str(error), type=type(error).__name__, non_retryable=not error.retryable) from error

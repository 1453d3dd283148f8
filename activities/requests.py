"""Activities of the access-request workflow: bookkeeping in the app DB and the grant ledger."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import catalog, policy
from access.db import append_audit, lock, session_scope
from access.ledger import active_grants
from access.tables import AccessRequest, Credential, Grant
from access.types import (
    AuditEntry,
    GrantInput,
    GrantResult,
    LedgerRevokeInput,
    LedgerRevokeResult,
    RecordInput,
    ResolveInput,
    RevokeInput,
    RevokeResult,
)
from activities.connectors import BUILT_IN, Connector, ConnectorError, ConnectorFactory, Credentials, Target
from activities.integrations import as_activity_error, resolve_target
from workflows import names

T = TypeVar("T")

MAX_ACCOUNT = 63
"""The longest name a per-grant account may have (PostgreSQL's identifier limit)."""


class RequestActivities:
    """Activities bound to one app DB and one set of connector kinds.

    ``cipher`` gives the key that seals one-time credentials (``access.credentials``); it is
    asked for only when a connector makes some.
    """

    def __init__(
        self,
        db_url: str,
        *,
        connectors: Mapping[str, ConnectorFactory] = BUILT_IN,
        cipher: Callable[[], Fernet] | None = None,
    ) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)
        self._cipher = cipher

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.record_request,
            self.resolve_approvers,
            self.provision_grant,
            self.revoke_grant,
            self.revoke_ledger_grant,
        ]

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
        called again: the ledger counts grants per account and role. Called again with
        ``expires_at`` after an extension, it only moves the end the target enforces.
        Credentials a connector makes are sealed into the app DB in the ledger's transaction.
        """
        with session_scope(self._db_url) as session:
            target, connector = self._target(session, input.role)
            account = _account(connector, input.requester, input.request_id)
            lock(session, account, input.role)
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            others = active_grants(session, account, input.role, besides_request=input.request_id)
            extending = grant is not None and input.expires_at is not None
            now = datetime.now(UTC)
            if grant is None:
                # The clock starts now, at the grant, so the target can enforce the same end.
                grant = Grant(
                    account=account,
                    role=input.role,
                    user_email=input.requester,
                    path="jit",
                    request_id=input.request_id,
                    granted_at=now,
                    expires_at=input.expires_at or (now + input.duration if input.duration is not None else None),
                )
            elif extending:
                grant.expires_at = input.expires_at
            session.add(grant)
            session.flush()
            expires_at = grant.expires_at
            sealed = session.get(Credential, input.request_id)
            if extending:
                if grant.active and not others:
                    _call(lambda: connector.extend(account, target, expires_at))
                if sealed is not None:
                    sealed.expires_at = expires_at
                    session.add(sealed)
            elif not others:
                cipher = self._key() if connector.per_grant_accounts else None  # before the login exists
                credentials = _call(lambda: connector.grant(account, target, expires_at))
                if credentials is not None:
                    sealed = _seal(cipher or self._key(), sealed, input.request_id, credentials, now)
                    session.add(sealed)
            return GrantResult(
                account=account,
                granted_at=grant.granted_at,
                expires_at=expires_at,
                shared=bool(others),
                credentials=sealed is not None,
            )

    def _key(self) -> Fernet:
        """The key that seals credentials; a missing or malformed one fails the grant for good, saying why."""
        try:
            if self._cipher is None:
                raise ValueError("this worker was given no key")
            return self._cipher()
        except ValueError as error:
            raise ApplicationError(
                f"cannot seal credentials: {error}", type="NoSecretKey", non_retryable=True
            ) from error

    @activity.defn(name=names.REVOKE_GRANT)
    def revoke_grant(self, input: RevokeInput) -> RevokeResult:
        """End the request's grant; revoke in the target unless another active grant remains."""
        with session_scope(self._db_url) as session:
            target, connector = self._target(session, input.role)
            account = _account(connector, input.requester, input.request_id)
            lock(session, account, input.role)
            now = datetime.now(UTC)
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            if grant is not None and grant.active:
                grant.active = False
                grant.ended_at = now
                session.add(grant)
                session.flush()
            others = active_grants(session, account, input.role, besides_request=input.request_id)
            if not others:
                # Also when no ledger row exists: a grant may have reached the target just before
                # its provisioning was interrupted. Revoking what is not there is success.
                _call(lambda: connector.revoke(account, target))
            sealed = session.get(Credential, input.request_id)
            if sealed is not None:  # never shown, and of no use now
                session.delete(sealed)
            return RevokeResult(revoked_at=now, still_held=bool(others))

    @activity.defn(name=names.REVOKE_LEDGER_GRANT)
    def revoke_ledger_grant(self, input: LedgerRevokeInput) -> LedgerRevokeResult:
        """An admin ends a birthright or external grant; the target is revoked unless another grant remains.

        A birthright grant ended so is granted again by the next birthright sync while its policy applies.
        """
        with session_scope(self._db_url) as session:
            grant = session.get(Grant, input.grant_id)
            if grant is None or grant.path == "jit":
                raise ApplicationError(
                    f"grant {input.grant_id} is not a birthright or external grant",
                    type="NotALedgerGrant",
                    non_retryable=True,
                )
            target, connector = self._target(session, grant.role)
            lock(session, grant.account, grant.role)
            session.refresh(grant)
            birthright = grant.path == "birthright"
            if grant.active:
                now = datetime.now(UTC)
                grant.active = False
                grant.ended_at = now
                session.add(grant)
                session.flush()
                others = active_grants(session, grant.account, grant.role)
                if not others:
                    _call(lambda: connector.revoke(grant.account, target))
                reason = input.comment
                if birthright:
                    reason += f" (birthright policy {grant.policy!r}: the next birthright sync grants it again)"
                details = {
                    "account": grant.account,
                    "user": grant.user_email,
                    "path": grant.path,
                    "still_held": bool(others),
                }
                entry = AuditEntry(
                    actor=input.actor,
                    action="grant.revoked",
                    target=grant.role,
                    reason=reason.strip(),
                    details=details,
                    at=now,
                )
                append_audit(session, [entry])
            else:
                others = active_grants(session, grant.account, grant.role)
            return LedgerRevokeResult(
                role=grant.role,
                account=grant.account,
                path=grant.path,
                still_held=bool(others),
                returns_on_sync=birthright,
            )

    def _target(self, session: Session, path: str) -> tuple[Target, Connector]:
        integration, target, connector = resolve_target(session, path, self._connectors)
        # Discovery holds this exclusively while it compares the target with the ledger.
        lock(session, "integration", integration.name, shared=True)
        return target, connector


def _seal(
    cipher: Fernet, row: Credential | None, request_id: str, credentials: Credentials, now: datetime
) -> Credential:
    """The credentials as a ``Credential`` row, the password sealed (a retry replaces the earlier ones)."""
    row = row or Credential(request_id=request_id, username=credentials.username, created_at=now)
    row.username = credentials.username
    row.ciphertext = cipher.encrypt(credentials.password.encode()).decode()
    row.dsn_hint = credentials.dsn_hint
    row.expires_at = credentials.expires_at
    row.created_at = now
    row.shown_at = None
    return row


def _account(connector: Connector, email: str, request_id: str) -> str:
    """The user's account, or for a per-grant connector ``<account>_<request id>``, within 63 characters."""
    account = connector.account_for(email)
    if not connector.per_grant_accounts:
        return account
    suffix = f"_{request_id}"
    return account[: MAX_ACCOUNT - len(suffix)] + suffix


def _call(operation: Callable[[], T]) -> T:
    """Run a connector call, turning its errors into retryable or final activity failures."""
    try:
        return operation()
    except ConnectorError as error:
        raise as_activity_error(error) from error

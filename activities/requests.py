"""Activities of the access-request workflow: its record, its approvers, and its grant made and revoked.

No target is called inside a DB transaction: a grant or revoke claims its ledger row in one short
transaction, calls the target with none open, and records the outcome in another (``store.ledger``).
A grant ended outside its request's run goes through ``activities.grants``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from cryptography.fernet import Fernet
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names, policy
from access.connectors import Connector, ConnectorError, Credentials, Target
from access.grants import GrantPath
from access.notifications import needs_admins, notices_for
from access.requests import GrantInput, GrantResult, RecordInput, ResolveInput, RevokeInput, RevokeResult
from access.types import AuditEntry
from activities import metrics
from activities.connectors import BUILT_IN, ConnectorFactory
from activities.connectors.ledger import LedgerConnector
from activities.grants import Ending, drop_credentials, record_ending, revoke_grant_by_id
from activities.liveness import heartbeating
from activities.notify.settings import stored_routes
from activities.targets import as_activity_error, hold_integration, resolve_target
from store import catalog
from store import notifications as outbox
from store.approval_inbox import keep_inbox
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.ledger import HELD, PROVISIONING, REVOKING, active_grants, claim_revoke, end, revoke_in_flight
from store.tables import AccessRequest, Credential, Grant, RequestStep

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ACCOUNT = 63
"""The longest name a per-grant account may have (PostgreSQL's identifier limit)."""


class _GrantClaim(NamedTuple):
    target: Target
    connector: Connector
    account: str
    grant_id: int
    expires_at: datetime | None
    now: datetime
    call: bool
    """The target must be called: no other grant holds the account and role (or it is an extension)."""
    extend: bool
    result: GrantResult


class RequestActivities:
    """Activities bound to one app DB and one set of connector kinds.

    ``cipher`` gives the key that seals one-time credentials (``store.credentials``); it is
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
        ]

    @activity.defn(name=names.RECORD_REQUEST)
    def record_request(self, input: RecordInput) -> None:
        """Write the request's latest status and its new audit events, in one transaction."""
        status = input.status
        with session_scope(self._db_url) as session:
            if input.seq is not None:
                if session.get(RequestStep, (status.id, input.seq)) is not None:
                    return  # written before the worker died, and replayed: audit nothing twice
                session.add(RequestStep(request_id=status.id, seq=input.seq))
            row = session.get(AccessRequest, status.id) or AccessRequest(
                id=status.id,
                requester=status.requester,
                role=status.role,
                state=status.state,
                created_at=status.created_at,
            )
            # Two steps of one workflow task may be written in either order: a status older than the one
            # written keeps out of the way; its audit events are written all the same.
            if input.seq is None or input.seq > row.recorded_seq:
                row.state = status.state.value
                row.expires_at = status.expires_at
                row.ended_at = status.ended_at
                row.status = status.model_dump(mode="json")
                row.recorded_seq = input.seq or row.recorded_seq
                session.add(row)
                keep_inbox(session, status.id, status)  # who may decide it now, beside what it is now
            events = input.events
            if status.expires_at is not None and (input.seq is None or input.seq >= row.recorded_seq):
                query = select(Grant).where(Grant.request_id == status.id)
                warned = _warned(events) and status.warned_for is not None
                if warned:  # the audit chain's lock before the grant's row, as every writer takes them
                    lock(session, "audit")
                grant = session.exec(query.with_for_update() if warned else query).first()
                if grant is not None and grant.active:
                    grant.expires_at = status.expires_at
                    if warned and grant.warned_for == status.warned_for:
                        # A run from before the scan warned of an end the scan warned of first: once is enough.
                        events = [event for event in events if event.action != EXPIRING_SOON]
                    elif warned:
                        grant.warned_for = status.warned_for  # and the scan will not warn of it again
                    session.add(grant)
            append_audit(session, events)
            if input.seq is not None:  # inside the step's dedup: its notices are queued once, with its events
                _queue_notices(session, input, events)

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
        with heartbeating():
            return self._provision(input)

    def _provision(self, input: GrantInput) -> GrantResult:
        """Record the grant in the ledger and grant the role in the target, idempotently.

        Three steps, the target called with no transaction open (``store.ledger``): claim the grant
        (``provisioning``), grant in the target, record it ``held`` with any credentials sealed. When
        another grant already holds the account and role, the target is not called again. Called again
        with ``expires_at`` after an extension, it only moves the end the target enforces. A grant that
        fails for good is taken back (revoked, idempotently) before the failure is reported.
        """
        claim = self._claim_grant(input)
        if claim.extend:
            if claim.call:
                _call(lambda: claim.connector.extend(claim.account, claim.target, claim.expires_at))
            return claim.result
        if not claim.call:
            return claim.result
        cipher = self._key() if claim.connector.per_grant_accounts else None  # before the login exists
        try:
            credentials = claim.connector.grant(claim.account, claim.target, claim.expires_at)
        except ConnectorError as error:
            if _final_attempt(error):
                self._take_back(input, f"provisioning failed: {error}", refused=not error.retryable)
            raise as_activity_error(error) from error
        log.info("granted %s to %s", input.role, claim.account)
        with session_scope(self._db_url) as session:
            lock(session, claim.account, input.role)
            grant = session.get(Grant, claim.grant_id)
            sealed = session.get(Credential, input.request_id)
            result = claim.result
            if grant is not None and grant.active:
                if grant.phase == PROVISIONING:
                    now = datetime.now(UTC)
                    grant.phase = HELD
                    metrics.grant_took_effect(claim.target.integration, GrantPath.JIT)
                    grant.phase_at = now
                    if (
                        input.duration is not None
                        and input.expires_at is None
                        and not claim.connector.per_grant_accounts
                    ):
                        # The clock starts when the target granted it: after an outage, a grant claimed long
                        # before gets its whole duration. (A per-grant login keeps the end it was made with,
                        # which the target enforces.)
                        grant.granted_at, grant.expires_at = now, now + input.duration
                        result = result.model_copy(update={"granted_at": now, "expires_at": grant.expires_at})
                    session.add(grant)
                if credentials is not None:
                    sealed = _seal(cipher or self._key(), sealed, input.request_id, credentials, claim.now)
                    session.add(sealed)
            return result.model_copy(update={"credentials": sealed is not None})

    def _claim_grant(self, input: GrantInput) -> _GrantClaim:
        """The claim: the ledger row in one short transaction under the account and role's lock."""
        with session_scope(self._db_url) as session:
            target, connector = self._target(session, input.role)
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            # A grant already made keeps the account it was made for, whatever the account rule says now.
            account = grant.account if grant is not None else _account(connector, input.requester, input.request_id)
            lock(session, account, input.role)
            if grant is not None:
                session.refresh(grant)
            now = datetime.now(UTC)
            if grant is not None and input.expires_at is not None:
                return self._claim_extension(session, grant, input, target, connector, account, now)
            if grant is not None and (not grant.active or grant.phase == REVOKING):
                raise ApplicationError(
                    f"the grant of request {input.request_id} was ended while it was being made",
                    type="GrantEnded",
                    non_retryable=True,
                )
            call = grant is None or grant.phase == PROVISIONING
            if call and revoke_in_flight(session, account, input.role, besides_grant=grant.id if grant else None):
                # Its revoke must land before this grant, or it would take this grant's access away.
                raise ApplicationError(
                    f"{account} is being revoked from {input.role} in the target; granting once that is done",
                    type="RevokeInFlight",
                )
            held = active_grants(session, account, input.role, besides_request=input.request_id, phases=(HELD,))
            if grant is None:
                if connector.per_grant_accounts:
                    self._key()  # a missing key fails the grant before anything is claimed
                # The end as the target is told it; the record step restarts the clock once it has granted.
                grant = Grant(
                    account=account,
                    role=input.role,
                    user_email=input.requester,
                    path=GrantPath.JIT,
                    request_id=input.request_id,
                    granted_at=now,
                    expires_at=input.expires_at or (now + input.duration if input.duration is not None else None),
                    phase=PROVISIONING,
                    phase_at=now,
                )
            if call and (held or isinstance(connector, LedgerConnector)):
                # Shared (the target already has it for another grant), or the ledger row is the grant
                # itself: nothing to call, held at once.
                grant.phase = HELD
                metrics.grant_took_effect(target.integration, GrantPath.JIT)
                grant.phase_at = now
                call = False
            session.add(grant)
            session.flush()
            assert grant.id is not None
            result = GrantResult(
                account=account,
                granted_at=grant.granted_at,
                expires_at=grant.expires_at,
                shared=bool(held),
                credentials=session.get(Credential, input.request_id) is not None,
            )
            return _GrantClaim(target, connector, account, grant.id, grant.expires_at, now, call, False, result)

    def _claim_extension(
        self,
        session: Session,
        grant: Grant,
        input: GrantInput,
        target: Target,
        connector: Connector,
        account: str,
        now: datetime,
    ) -> _GrantClaim:
        """An extension: the new end in the ledger; the target is told only if this grant is the one it holds."""
        grant.expires_at = input.expires_at
        session.add(grant)
        sealed = session.get(Credential, input.request_id)
        if sealed is not None:
            sealed.expires_at = input.expires_at
            session.add(sealed)
        others = active_grants(session, account, input.role, besides_request=input.request_id)
        call = grant.active and grant.phase == HELD and not others
        assert grant.id is not None
        result = GrantResult(
            account=account,
            granted_at=grant.granted_at,
            expires_at=grant.expires_at,
            shared=bool(others),
            credentials=sealed is not None,
        )
        return _GrantClaim(target, connector, account, grant.id, grant.expires_at, now, call, True, result)

    def _take_back(self, input: GrantInput, reason: str, *, refused: bool) -> None:
        """A grant failed for good after possibly reaching the target: revoke it (unless another grant
        covers the account and role) and end its row, so nothing stays granted with no ledger row.

        If this revoke fails too, the row stays ``revoking`` and the request's revoke or the expiry
        backstop finishes it — unless the target ``refused`` the grant outright and refuses the revoke for
        good as well (a role gone from it): then nothing of the grant is there, and the row just ends.
        """
        with session_scope(self._db_url, write=False) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
        if grant is None or grant.id is None or not grant.active:
            return
        ending = Ending(actor="lapse", action="grant.taken_back", reason=reason)
        try:
            revoke_grant_by_id(self._db_url, self._connectors, grant.id, ending)
        except ApplicationError as error:
            if not (refused and error.non_retryable):
                return
            with session_scope(self._db_url) as session:
                lock(session, grant.account, grant.role)
                ended = session.get(Grant, grant.id)
                if ended is not None and ended.active:
                    now = datetime.now(UTC)
                    end(session, ended, now)
                    why = f"{reason}; the target refused the revoke too ({error.message}): nothing of it is there"
                    record_ending(session, ended, replace(ending, reason=why), still_held=False, now=now)

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
        with heartbeating():
            return self._revoke(input)

    def _revoke(self, input: RevokeInput) -> RevokeResult:
        """End the request's grant; revoke in the target unless another active grant remains.

        Claim (``revoking``, or ended at once when another grant covers the account and role), revoke in
        the target with no transaction open, record the end: see ``store.ledger``.
        """
        with session_scope(self._db_url) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == input.request_id)).first()
            if grant is None or not grant.active:
                # Nothing of this request's is held (never claimed, or ended already): done, without resolving
                # the target, which may be gone (a role deleted after a grant that failed).
                drop_credentials(session, input.request_id)
                ended_at = grant.ended_at if grant is not None and grant.ended_at is not None else datetime.now(UTC)
                others = active_grants(session, grant.account, grant.role) if grant is not None else 0
                return RevokeResult(revoked_at=ended_at, still_held=bool(others))
            target, connector = self._target(session, input.role)
            account = grant.account  # the account it was made for, whatever the account rule says now
            lock(session, account, input.role)
            now = datetime.now(UTC)
            session.refresh(grant)
            if grant is None or not grant.active:
                # Ended already (an earlier attempt, an admin, the backstop), or never claimed: the target
                # was never called for a grant with no row, since the row is claimed before the call.
                drop_credentials(session, input.request_id)
                others = active_grants(session, account, input.role, besides_request=input.request_id)
                ended_at = grant.ended_at if grant is not None and grant.ended_at is not None else now
                return RevokeResult(revoked_at=ended_at, still_held=bool(others))
            if not claim_revoke(session, grant, now):
                drop_credentials(session, input.request_id)
                metrics.grant_ended(target.integration, expires_at=grant.expires_at, began_at=now)
                return RevokeResult(revoked_at=now, still_held=True)
            if isinstance(connector, LedgerConnector):  # the row is the grant: nothing to call outside
                end(session, grant, now)
                metrics.grant_ended(target.integration, expires_at=grant.expires_at, began_at=now)
                drop_credentials(session, input.request_id)
                return RevokeResult(revoked_at=now, still_held=False)
            grant_id, expires_at, began_at = grant.id, grant.expires_at, grant.phase_at  # phase_at: its first claim
        _call(lambda: connector.revoke(account, target))
        log.info("revoked %s from %s", input.role, account)
        with session_scope(self._db_url) as session:
            lock(session, account, input.role)
            now = datetime.now(UTC)
            ended = session.get(Grant, grant_id)
            if ended is not None and ended.active:
                end(session, ended, now)
                metrics.grant_ended(target.integration, expires_at=expires_at, began_at=began_at)
            drop_credentials(session, input.request_id)  # never shown, and of no use now
            return RevokeResult(revoked_at=now, still_held=False)

    def _target(self, session: Session, path: str) -> tuple[Target, Connector]:
        integration, target, connector = resolve_target(session, path, self._connectors)
        hold_integration(session, integration.name)
        return target, connector


EXPIRING_SOON = "grant.expiring_soon"


def _warned(events: Sequence[AuditEntry]) -> bool:
    """Whether a run from before the expiring-soon scan warned in this step (new runs never do)."""
    return any(event.action == EXPIRING_SOON for event in events)


def _queue_notices(session: Session, input: RecordInput, events: Sequence[AuditEntry]) -> None:
    """Queue who is told what about this step (``access.notifications``) in the step's own transaction: a
    primary-key read of the routes, then, only when something is configured and notifies, one read of the
    recipients' channel choices and one insert."""
    routes = stored_routes(session)
    if routes.empty or not events:
        return
    assert input.seq is not None
    admins = outbox.admins(session) if needs_admins(events) else []
    notices = notices_for(input.status, events, input.seq, admins)
    outbox.queue(session, notices, routes, now=datetime.now(UTC))


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


def _final_attempt(error: ConnectorError) -> bool:
    """Whether the activity fails for good with this error: permanent, or the retry policy's last attempt."""
    if not error.retryable:
        return True
    info = activity.info()
    attempts = info.retry_policy.maximum_attempts if info.retry_policy is not None else 0
    return 0 < attempts <= info.attempt

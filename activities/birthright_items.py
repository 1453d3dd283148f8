"""One item of a birthright plan, applied: claimed in the ledger, granted or revoked in the target, recorded.

Its role's target is resolved once per batch; the three steps follow ``store.ledger``.

The activities in ``activities.birthright`` choose the transactions; these functions work inside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from access.connectors import Connector, RetryableError, Target
from access.grants import GrantPath, birthright_barred
from access.types import AuditEntry
from activities import metrics
from activities.connectors import ConnectorFactory
from activities.connectors.ledger import LedgerConnector
from activities.targets import hold_integration, resolve_target
from store import groups as group_refs
from store.audit_log import append_audit
from store.db import lock
from store.ledger import HELD, PROVISIONING, active_grants, claim_revoke, end, revoke_in_flight
from store.tables import BirthrightException, BirthrightItem, BirthrightPolicy, Grant, Membership, User

ACTOR = "lapse"


class Refused(Exception):
    """The item cannot be applied until someone changes something (a role or integration is gone)."""


@dataclass(frozen=True)
class Resolved:
    integration: str
    target: Target
    connector: Connector


@dataclass(frozen=True)
class Claimed:
    """An item's claim: the grants whose target call is due, and those a revoke ended without one."""

    resolved: Resolved
    calls: list[tuple[int, str]]
    """(grant id, account) to grant (``add``) or revoke (``remove``) in the target."""
    covered: list[tuple[int, str]]
    """(grant id, account) a ``remove`` ended in the claim: another grant still covers the account."""


class BatchTargets:
    """Roles and connectors resolved once per batch: a connector may cache accounts (LDAP DNs)."""

    def __init__(self, connectors: Mapping[str, ConnectorFactory]) -> None:
        self._connectors = connectors
        self._roles: dict[str, Resolved] = {}
        self._by_integration: dict[str, Connector] = {}

    def records_only(self, session: Session, path: str) -> bool:
        """Whether the role's grant is the ledger row alone (the built-in ledger connector)."""
        try:
            return isinstance(self.resolve(session, path).connector, LedgerConnector)
        except Refused:
            return False

    def resolve(self, session: Session, path: str) -> Resolved:
        if path in self._roles:
            return self._roles[path]
        try:
            integration, target, connector = resolve_target(session, path, self._connectors)
        except ApplicationError as error:
            raise Refused(error.message) from error
        # One connector per integration for the batch: it may cache accounts (LDAP DNs).
        connector = self._by_integration.setdefault(integration.name, connector)
        barred = birthright_barred(integration.name, connector)
        if barred:
            raise Refused(f"role {path} is in {barred}")
        self._roles[path] = Resolved(integration.name, target, connector)
        return self._roles[path]


def claim(session: Session, item: BirthrightItem, targets: BatchTargets) -> Claimed | None:
    """Claim the item's grants or revokes in the caller's transaction; None when no target call is due
    (the item is then done, recorded here)."""
    fresh = session.get(BirthrightItem, item.id, with_for_update=True)
    if fresh is None or fresh.done:
        return None  # an earlier attempt got here first
    resolved = targets.resolve(session, item.role)
    hold_integration(session, resolved.integration)
    if item.action == "add":
        claimed = Claimed(resolved, _claim_add(session, item, resolved), [])
    elif item.action == "remove":
        claimed = _claim_remove(session, item, resolved)
    else:
        append_audit(session, _relabel(session, item))
        claimed = Claimed(resolved, [], [])
    if claimed.calls:
        return claimed
    record(session, item, claimed)
    return None


def birthright_grants(session: Session, user: str, role: str) -> list[Grant]:
    return list(
        session.exec(
            select(Grant).where(
                Grant.path == GrantPath.BIRTHRIGHT,
                Grant.user_email == user,
                Grant.role == role,
                col(Grant.active).is_(True),
            )
        )
    )


def _claim_add(session: Session, item: BirthrightItem, resolved: Resolved) -> list[tuple[int, str]]:
    """Claim the grant of an ``add``: the (grant id, account) the target must grant, or none."""
    user = session.exec(select(User).where(User.email == item.user_email)).first()
    if user is None or not user.active:
        return []  # left since the plan was made: the next plan removes, not adds
    if not _still_granted(session, user, item):
        return []  # the policy or the user's groups changed since the plan: the run that change started decides
    account = resolved.connector.account_for(item.user_email)
    lock(session, account, item.role)
    existing = birthright_grants(session, item.user_email, item.role)
    claimed = [g for g in existing if g.phase == PROVISIONING]
    if claimed:  # an earlier attempt claimed it and may not have reached the target: call again
        return [(claimed[0].id, claimed[0].account)] if claimed[0].id is not None else []
    if existing:  # already granted (a concurrent attempt): at most bring the policy name up to date
        for grant in existing:
            grant.policy = item.policy
            session.add(grant)
        return []
    if revoke_in_flight(session, account, item.role):
        # That revoke must land before this grant, or it would take this grant's access away.
        raise RetryableError(f"{account} is being revoked from {item.role} in the target; granting once that is done")
    now = datetime.now(UTC)
    grant = Grant(
        account=account,
        role=item.role,
        user_email=item.user_email,
        path=GrantPath.BIRTHRIGHT,
        policy=item.policy,
        granted_at=now,
        expires_at=None,
        phase=PROVISIONING,
        phase_at=now,
    )
    session.add(grant)
    session.flush()
    assert grant.id is not None
    # Granted in the target even when another grant covers it: granting is idempotent, and that other
    # grant's access may have been removed by hand (discovery ends only the grants it can restore).
    return [(grant.id, account)]


def _claim_remove(session: Session, item: BirthrightItem, resolved: Resolved) -> Claimed:
    """Claim the revokes of a ``remove``: those of the last grant of their account go to the target; the
    others end here, another grant still covering their account."""
    accounts = sorted({g.account for g in birthright_grants(session, item.user_email, item.role)})
    for account in accounts:
        lock(session, account, item.role)
    now = datetime.now(UTC)
    claimed = Claimed(resolved, [], [])
    for grant in birthright_grants(session, item.user_email, item.role):  # again, under the locks
        assert grant.id is not None
        if claim_revoke(session, grant, now):
            claimed.calls.append((grant.id, grant.account))
        else:
            claimed.covered.append((grant.id, grant.account))
    session.flush()
    return claimed


def call_target(item: BirthrightItem, claimed: Claimed) -> None:
    """The target's calls of a claimed item, each account once; no transaction is open (but a ledger-only one)."""
    connector, target = claimed.resolved.connector, claimed.resolved.target
    for account in sorted({account for _, account in claimed.calls}):
        if item.action == "add":
            connector.grant(account, target, None)
        else:
            connector.revoke(account, target)


def record(session: Session, item: BirthrightItem, claimed: Claimed) -> None:
    """Record a claimed item's outcome and mark it done (a second recording of the same item does nothing)."""
    fresh = session.get(BirthrightItem, item.id, with_for_update=True)
    if fresh is None or fresh.done:
        return
    now = datetime.now(UTC)
    events: list[AuditEntry] = []
    if item.action == "add":
        for grant_id, account in claimed.calls:
            lock(session, account, item.role)
            grant = session.get(Grant, grant_id)
            if grant is None or not grant.active:
                continue
            grant.phase = HELD
            grant.phase_at = now
            session.add(grant)
            metrics.grant_took_effect(claimed.resolved.integration, GrantPath.BIRTHRIGHT)
            reason = f"birthright policy {item.policy!r}"
            if active_grants(session, account, item.role, besides_grant=grant_id):
                reason += "; another active grant already gave this access"
            details = {"user": item.user_email, "account": account, "policy": item.policy, "grant_id": grant_id}
            events.append(
                AuditEntry(
                    actor=ACTOR, action="birthright.granted", target=item.role, reason=reason, details=details, at=now
                )
            )
    elif item.action == "remove":
        why = _why_removed(session, item)
        for grant_id, account in claimed.calls:
            lock(session, account, item.role)
            grant = session.get(Grant, grant_id)
            if grant is not None and grant.active:
                end(session, grant, now)
                metrics.grant_ended(claimed.resolved.integration, expires_at=grant.expires_at, began_at=grant.phase_at)
        revoked = sorted({a for _, a in claimed.calls})
        covered = sorted({a for _, a in claimed.covered} - set(revoked))
        for account, still_held in [(a, False) for a in revoked] + [(a, True) for a in covered]:
            reason = f"birthright policy {item.policy!r} no longer grants it: {why}"
            if still_held:
                reason += "; another active grant still covers the account, so access stays"
            details = {"user": item.user_email, "account": account, "policy": item.policy, "still_held": still_held}
            events.append(
                AuditEntry(
                    actor=ACTOR, action="birthright.revoked", target=item.role, reason=reason, details=details, at=now
                )
            )
    fresh.done = True
    session.add(fresh)
    append_audit(session, events)


def _still_granted(session: Session, user: User, item: BirthrightItem) -> bool:
    """Whether the item's policy still grants its role to a group the user is in, and not by an exception (either
    may have changed mid-run)."""
    policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == item.policy)).first()
    if policy is None or item.role not in policy.roles:
        return False
    excepted = select(BirthrightException.id).where(
        BirthrightException.policy == item.policy,
        BirthrightException.user_email == item.user_email,
        BirthrightException.role == item.role,
    )
    if session.exec(excepted).first() is not None:
        return False  # an access review revoked it since the plan was made
    # By the groups the policy's references name, never a namesake of another source.
    held = set(session.exec(select(Membership.group_id).where(Membership.user_id == user.id)))
    return not held.isdisjoint(group_refs.resolve(session, policy.groups).values())


def _why_removed(session: Session, item: BirthrightItem) -> str:
    user = session.exec(select(User).where(User.email == item.user_email)).first()
    if user is None or not user.active:
        return "the user is no longer active"
    policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == item.policy)).first()
    if policy is None:
        return "the policy was deleted"
    return "the user is no longer in a group of a policy granting the role, or the policy changed"


def _relabel(session: Session, item: BirthrightItem) -> list[AuditEntry]:
    events: list[AuditEntry] = []
    for grant in birthright_grants(session, item.user_email, item.role):
        if grant.policy == item.policy:
            continue
        events.append(
            AuditEntry(
                actor=ACTOR,
                action="birthright.relabelled",
                target=item.role,
                reason=f"birthright policy {item.policy!r} now accounts for it (was {grant.policy!r}); access stays",
                details={"user": item.user_email, "account": grant.account, "policy": item.policy, "was": grant.policy},
            )
        )
        grant.policy = item.policy
        session.add(grant)
    return events

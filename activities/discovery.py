"""Discovery: test an integration's connection, read its catalog and grants, and bring the app DB in line.

Discovery compares what the target says with the grants ledger: a grant in the target that
no Lapse grant covers is recorded with path ``external``; on a JIT-only role it is drift,
audited, and handed back to the workflow to revoke (``activities.drift``) where the integration
enforces JIT-only. Where the connector can tell when an account was last used (a live PostgreSQL
session, AD's last logon), the account's active grants on the integration carry it (``last_used_at``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from access import names
from access.connectors import Connector, ConnectorError, Discovery, HeldRole
from access.discovery import ConnectionTestResult, DiscoveryResult, DriftItem, IntegrationInput
from access.grants import GrantPath
from access.types import AuditEntry
from activities import metrics
from activities.connectors import BUILT_IN, ConnectorFactory, connector_for
from activities.targets import as_activity_error, integration_named
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.ledger import IN_FLIGHT
from store.org_open import awaiting_first_run, unresolved_after
from store.tables import Grant, Integration, Resource, Role, User

DRIFT_PER_RUN = 1000
"""At most this many drift revokes per discovery run (they travel in history); the next run does the rest."""


class DiscoveryActivities:
    """Activities bound to one app DB and one set of connector kinds."""

    def __init__(self, db_url: str, *, connectors: Mapping[str, ConnectorFactory] = BUILT_IN) -> None:
        self._db_url = db_url
        self._connectors = dict(connectors)

    def all(self) -> list[Callable[..., Any]]:
        return [self.test_connection, self.discover_integration]

    @activity.defn(name=names.TEST_CONNECTION)
    def test_connection(self, input: IntegrationInput) -> ConnectionTestResult:
        """Reach the target with the integration's settings; a failure is an answer, not an error."""
        with session_scope(self._db_url, write=False) as session:
            integration = integration_named(session, input.integration)
        try:
            return ConnectionTestResult(ok=True, detail=connector_for(integration, self._connectors).test_connection())
        except ConnectorError as error:  # an invalid integration too: what to fix is the answer
            return ConnectionTestResult(ok=False, detail=str(error), retryable=error.retryable)

    @activity.defn(name=names.DISCOVER_INTEGRATION)
    def discover_integration(self, input: IntegrationInput) -> DiscoveryResult:
        """Read the target's resources, roles and grants, and bring the catalog and ledger in line."""
        name = input.integration
        started = datetime.now(UTC)
        try:
            with session_scope(self._db_url, write=False) as session:
                connector = connector_for(integration_named(session, name), self._connectors)
            if not connector.discovers:
                return DiscoveryResult(integration=name)
            # Read the target holding no lock: on a large directory or app this takes a while.
            found = connector.discover()
            activity.heartbeat()
            held = list(connector.list_grants(found.roles))
            activity.heartbeat()
            with session_scope(self._db_url) as session:
                # Exclusive: no grant or revoke of this integration is half-done while we compare. Where the
                # listing and the ledger disagree, a grant or revoke may have happened since the listing:
                # read those roles again now, so one Lapse is making is never mistaken for drift.
                lock(session, "integration", name)
                awaited = awaiting_first_run(session, "role", [name])  # birthright references to its roles
                integration = integration_named(session, name)
                disputed = _disputed(session, f"{name}/", held)
                if disputed:
                    again = [r for r in found.roles if f"{name}/{r.resource}/{r.name}" in disputed]
                    kept = [h for h in held if f"{name}/{h.resource}/{h.role}" not in disputed]
                    held = kept + list(connector.list_grants(again))
                result = _reconcile(session, integration, connector, found, held, datetime.now(UTC))
                if unresolved := unresolved_after(session, awaited, "the first discovery"):
                    append_audit(session, [unresolved])  # and listed as unresolved, no longer as waiting
            metrics.sync_finished("discovery", started, items=len(held))
            metrics.grant_took_effect(name, GrantPath.EXTERNAL, result.external_found)
            return result
        except ConnectorError as error:
            self._failed(input.integration, str(error))
            raise as_activity_error(error) from error
        except ApplicationError as error:
            self._failed(input.integration, error.message)
            raise

    def _failed(self, name: str, reason: str) -> None:
        with session_scope(self._db_url) as session:
            integration = session.exec(select(Integration).where(Integration.name == name)).first()
            if integration is not None:
                integration.discovery_error = reason
                session.add(integration)
                append_audit(
                    session,
                    [AuditEntry(actor="lapse", action="discovery.failed", target=f"integration:{name}", reason=reason)],
                )


class ActiveGrant(NamedTuple):
    id: int
    account: str
    role: str
    path: str
    user_email: str | None
    request_id: str | None
    policy: str | None
    last_used_at: datetime | None


def _disputed(session: Session, prefix: str, held: list[HeldRole]) -> set[str]:
    """Role paths where the target's listing and the ledger's active grants differ."""
    rows = session.execute(
        sa_select(col(Grant.account), col(Grant.role)).where(
            col(Grant.role).startswith(prefix, autoescape=True), col(Grant.active).is_(True)
        )
    )
    ledger = {(account, role) for account, role in rows}
    listed = {(entry.account, f"{prefix}{entry.resource}/{entry.role}") for entry in held}
    return {path for _, path in ledger ^ listed}


def _reconcile(
    session: Session,
    integration: Integration,
    connector: Connector,
    found: Discovery,
    held: list[HeldRole],
    now: datetime,
) -> DiscoveryResult:
    result = DiscoveryResult(integration=integration.name)
    roles = _update_catalog(session, integration, found, result)
    prefix = f"{integration.name}/"
    events: list[AuditEntry] = []

    # Plain rows, not ORM objects: tens of thousands are read and only the few that change are loaded.
    active: dict[tuple[str, str], list[ActiveGrant]] = defaultdict(list)
    rows = session.execute(
        sa_select(
            *(
                col(c)
                for c in (
                    Grant.id,
                    Grant.account,
                    Grant.role,
                    Grant.path,
                    Grant.user_email,
                    Grant.request_id,
                    Grant.policy,
                    Grant.last_used_at,
                )
            )
        ).where(col(Grant.role).startswith(prefix, autoescape=True), col(Grant.active).is_(True))
    )
    for row in rows:
        grant = ActiveGrant(*row)
        active[(grant.account, grant.role)].append(grant)

    target_has: dict[tuple[str, str], HeldRole] = {}
    for entry in held:
        target_has[(entry.account, f"{prefix}{entry.resource}/{entry.role}")] = entry
    result.grants_seen = len(target_has)

    link = _linker(session, connector, held)
    unlinked: set[str] = set()
    new_rows: list[dict[str, Any]] = []
    used: list[dict[str, Any]] = []
    for (account, path), entry in sorted(target_has.items()):
        covering = active.get((account, path), [])
        # A Lapse grant knows its user even where no rule could (an ephemeral login per grant).
        user = link(entry) or next((g.user_email for g in covering if g.user_email), None)
        if user is None:
            unlinked.add(account)
        if entry.last_used is not None:
            result.grants_in_use += 1
            # Only ever forward: a directory's replicated last logon may lag what an earlier run saw.
            used += [
                {"id": g.id, "last_used_at": entry.last_used}
                for g in covering
                if g.last_used_at is None or g.last_used_at < entry.last_used
            ]
        if covering:
            continue
        new_rows.append(
            {
                "account": account,
                "role": path,
                "user_email": user,
                "path": GrantPath.EXTERNAL,
                "active": True,
                "granted_at": now,
                "last_used_at": entry.last_used,
            }
        )
        role = roles.get(path)
        if role is not None and role.jit_only:
            enforce = integration.enforce_jit_only
            events.append(
                AuditEntry(
                    actor="lapse",
                    action="drift.detected",
                    target=path,
                    reason="a JIT-only role was granted outside Lapse"
                    + ("; revoking it" if enforce else "; the integration does not enforce, so it stays"),
                    details={"account": account, "user": user},
                    at=now,
                )
            )
            if enforce and len(result.drift) < DRIFT_PER_RUN:
                result.drift.append(DriftItem(account=account, role=path, user=user))
    if new_rows:
        session.execute(insert(Grant), new_rows)
    if used:
        session.execute(update(Grant), used)
    result.external_found = len(new_rows)
    result.unlinked_accounts = len(unlinked)

    # A grant or revoke whose target call is under way (no lock is held across it, see store.ledger) may
    # not show in the listing yet: judge those pairs at the next discovery.
    in_flight = {
        (account, role)
        for account, role in session.execute(
            sa_select(col(Grant.account), col(Grant.role)).where(
                col(Grant.role).startswith(prefix, autoescape=True),
                col(Grant.active).is_(True),
                col(Grant.phase).in_(IN_FLIGHT),
            )
        )
    }
    gone: list[int] = []
    for (account, path), grants in active.items():
        if (account, path) in target_has or (account, path) in in_flight:
            continue
        for grant in grants:
            if grant.path == GrantPath.EXTERNAL:
                gone.append(grant.id)
                result.external_gone += 1
            elif grant.path == GrantPath.BIRTHRIGHT:
                # Revoked by hand outside Lapse: end it, so the next birthright sync grants it again.
                gone.append(grant.id)
                result.lapse_grants_missing += 1
                result.birthright_ended += 1
                events.append(
                    AuditEntry(
                        actor="lapse",
                        action="grant.missing_in_target",
                        target=path,
                        reason=f"the birthright grant (policy {grant.policy!r}) was removed in the target; "
                        "ended here, and the birthright sync grants it again while the policy applies",
                        details={"account": account, "user": grant.user_email, "policy": grant.policy},
                        at=now,
                    )
                )
            else:
                result.lapse_grants_missing += 1
                events.append(
                    AuditEntry(
                        actor="lapse",
                        action="grant.missing_in_target",
                        target=path,
                        reason=f"the {grant.path} grant is active in Lapse but the target does not have it",
                        details={"account": account, "user": grant.user_email, "request_id": grant.request_id},
                        at=now,
                    )
                )

    if gone:
        session.execute(update(Grant).where(col(Grant.id).in_(gone)).values(active=False, ended_at=now))
    integration.discovered_at = now
    integration.discovery_error = None
    integration.discovery_summary = result.model_dump(mode="json", exclude={"drift"})
    session.add(integration)
    summary = result.model_dump(mode="json", exclude={"drift", "integration"})
    events.append(
        AuditEntry(
            actor="lapse", action="discovery.completed", target=f"integration:{integration.name}", details=summary
        )
    )
    append_audit(session, events)
    return result


def _update_catalog(
    session: Session, integration: Integration, found: Discovery, result: DiscoveryResult
) -> dict[str, Role]:
    """Add what the target has, mark what it no longer has; returns the integration's roles by path."""
    resources = {r.name: r for r in session.exec(select(Resource).where(Resource.integration_id == integration.id))}
    for name in sorted(set(found.resources) | {r.resource for r in found.roles}):
        if name not in resources:
            resources[name] = Resource(
                integration_id=integration.id,  # type: ignore[arg-type]
                name=name,
                description=found.resources.get(name, ""),
            )
            session.add(resources[name])
    session.flush()
    by_id = {r.id: r for r in resources.values()}
    roles: dict[str, Role] = {}
    for role in session.exec(select(Role).where(col(Role.resource_id).in_(list(by_id)))):
        roles[role.path] = role
    seen: set[str] = set()
    for discovered in found.roles:
        path = f"{integration.name}/{discovered.resource}/{discovered.name}"
        seen.add(path)
        existing = roles.get(path)
        if existing is None:
            role = Role(
                resource_id=resources[discovered.resource].id,  # type: ignore[arg-type]
                name=discovered.name,
                path=path,
                description=discovered.description,
            )
            roles[path] = role
            result.roles_added += 1
        else:
            role = existing
            role.missing = False
            role.description = role.description or discovered.description
        session.add(role)
    for path, role in roles.items():
        if path not in seen:
            role.missing = True
            session.add(role)
            result.roles_missing += 1
    session.flush()
    result.resources = len(found.resources)
    result.roles = len(found.roles)
    return roles


def _linker(session: Session, connector: Connector, held: list[HeldRole]) -> Callable[[HeldRole], str | None]:
    """Which Lapse user holds an account: by the email the target reports, else by the account rule."""
    emails = set(session.exec(select(User.email)))
    by_rule: dict[str, str] = {}
    if connector.accounts_by_rule and any(entry.email is None for entry in held):
        by_rule = {connector.account_for(email): email for email in sorted(emails)}

    def link(entry: HeldRole) -> str | None:
        if entry.email is not None:
            email = entry.email.strip().lower()
            return email if email in emails else None
        return by_rule.get(entry.account)

    return link

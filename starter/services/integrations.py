"""Integrations (admins): connect target systems, test them, discover them, and tune their roles.

Every change is audited; a new integration's discovery schedule starts at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from access.discovery import ConnectionTestResult, DiscoveryResult
from access.durations import Duration
from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from access.types import AuditEntry, BreakGlass, Sensitivity
from activities.connectors import check_config
from starter.services import discovery
from starter.services.authorization import require_admin
from starter.services.fields import FreeText, Name, check_json
from starter.services.grants import GrantOut
from store import groups
from store.audit_log import append_audit
from store.catalog import role_owners
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant, Integration, Resource, Role, RoleOwner, User

MAX_CONFIG_KEYS = 50
"""Settings in one connector's configuration."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class IntegrationCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Lowercase letters, digits, `_`, `.`, `-`.")
    kind: Name = Field(description="`ledger`, `postgres`, `ldap` or `scim`.")
    description: FreeText = ""
    config: Annotated[dict[str, Any], AfterValidator(check_json)] = Field(
        default={},
        max_length=MAX_CONFIG_KEYS,
        description="The connector's settings; secrets only as references (`*_env`, `*_file`).",
    )
    discovery_every: Duration = Field(default=timedelta(minutes=15), description="How often discovery runs.")
    enforce_jit_only: bool = Field(default=False, description="Revoke grants of JIT-only roles made outside Lapse.")
    directory: bool = Field(
        default=False, description="Also the identity source the directory sync reads users and groups from (`ldap`)."
    )


class IntegrationOut(BaseModel):
    name: str
    kind: str
    description: str
    config: dict[str, Any]
    discovery_every: Duration
    enforce_jit_only: bool
    discovered_at: datetime | None
    discovery_error: str | None
    """Why the last discovery failed; ``null`` once one succeeds."""
    discovery_summary: dict[str, Any]
    roles: int
    directory: bool
    """Also the identity source of the directory sync."""
    insecure: bool = False
    """The configuration allows plaintext or unverified TLS to the target (``insecure: true``)."""
    discovers: bool = False
    """Its kind has a target to discover (the ledger has not), and its configuration is one its connector takes."""


class RoleOut(BaseModel):
    path: str
    resource: str
    name: str
    description: str
    sensitivity: str
    jit_only: bool
    missing: bool
    """The last discovery did not find it in the target: it cannot be requested."""
    holders: int
    """Active grants of the role, by any path."""
    owners: list[str] = []
    """The role's owners' emails (approvers where a policy names the resource owner)."""
    break_glass: BreakGlass | None = None
    """Its emergency access (break-glass), or null: it allows none."""


class RoleUpdate(BaseModel):
    jit_only: bool | None = None
    sensitivity: Sensitivity | None = None
    description: FreeText | None = None
    break_glass: BreakGlass | None = None
    """Allow emergency access (``{max_duration, review_within, notify}``); an explicit null takes it away."""


def _find(session: Session, name: str) -> Integration:
    integration = session.exec(select(Integration).where(Integration.name == name)).first()
    if integration is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no integration {name!r}", field="name")
    return integration


def _out(session: Session, integration: Integration) -> IntegrationOut:
    roles = session.exec(
        select(func.count()).select_from(Role).join(Resource).where(Resource.integration_id == integration.id)
    ).one()
    return IntegrationOut(
        name=integration.name,
        kind=integration.kind,
        description=integration.description,
        config=integration.config,
        discovery_every=timedelta(seconds=integration.discovery_interval_s),
        enforce_jit_only=integration.enforce_jit_only,
        discovered_at=integration.discovered_at,
        discovery_error=integration.discovery_error,
        discovery_summary=integration.discovery_summary,
        roles=int(roles),
        directory=integration.directory,
        insecure=bool(integration.config.get("insecure")),
        discovers=discovery.discovers(integration),
    )


def _role_out(role: Role, resource: Resource, holders: int, owners: list[str] | None = None) -> RoleOut:
    return RoleOut(
        path=role.path,
        resource=resource.name,
        name=role.name,
        description=role.description,
        sensitivity=role.sensitivity,
        jit_only=role.jit_only,
        missing=role.missing,
        holders=holders,
        owners=owners or [],
        break_glass=BreakGlass.model_validate(role.break_glass) if role.break_glass is not None else None,
    )


def list_integrations(settings: Settings, admin: User) -> list[IntegrationOut]:
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(Integration).order_by(Integration.name)).all()
        return [_out(session, i) for i in rows]


def get_integration(settings: Settings, admin: User, name: str) -> IntegrationOut:
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        return _out(session, _find(session, name))


def _check(body: IntegrationCreate) -> None:
    """Refuse what could never work, naming the field: too frequent a discovery, a configuration its
    connector refuses, a directory that is no LDAP."""
    if body.discovery_every < timedelta(minutes=1):
        raise Refusal(
            RefusalKind.INVALID, "discovery_every must be at least one minute (PT1M)", field="discovery_every"
        )
    try:
        check_config(body.kind, body.config)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"config{'.' + where if where else ''}: {first['msg']}"
        raise Refusal(RefusalKind.INVALID, message, field="config") from None
    except ValueError as error:
        raise Refusal(RefusalKind.INVALID, str(error), field="kind") from None
    if body.directory and body.kind != "ldap":
        raise Refusal(RefusalKind.INVALID, "only an ldap integration can be the directory", field="directory")


async def create_integration(
    client: Client, settings: Settings, admin: User, body: IntegrationCreate
) -> IntegrationOut:
    """Connect a target system and start its discovery schedule."""
    require_admin(admin)
    _check(body)
    with session_scope(settings.db_url) as session:
        if session.exec(select(Integration).where(Integration.name == body.name)).first() is not None:
            raise Refusal(RefusalKind.CONFLICT, f"an integration named {body.name!r} already exists", field="name")
        integration = Integration(
            name=body.name,
            kind=body.kind,
            description=body.description,
            config=body.config,
            discovery_interval_s=int(body.discovery_every.total_seconds()),
            enforce_jit_only=body.enforce_jit_only,
            directory=body.directory,
        )
        session.add(integration)
        session.flush()
        details = {"kind": body.kind, "config": body.config}
        append_audit(
            session, [AuditEntry(actor=admin.email, action="integration.created", target=body.name, details=details)]
        )
        out = _out(session, integration)
    if discovery.discovers(integration):
        await discovery.ensure_discovery_schedule(client, settings, integration)
    return out


async def run_connection_test(client: Client, settings: Settings, admin: User, name: str) -> ConnectionTestResult:
    """Reach the target with the integration's settings, on a worker; ``ok: false`` says what is wrong."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        _find(session, name)
    return await discovery.check_connection(client, settings, name)


async def discover(client: Client, settings: Settings, admin: User, name: str) -> DiscoveryResult:
    """Run discovery now and return what it found and changed."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        integration = _find(session, name)
    if not discovery.discovers(integration):
        message = f"integration {name!r} ({integration.kind}) has no target to discover"
        raise Refusal(RefusalKind.CONFLICT, message, field="name")
    return await discovery.discover_now(client, settings, name)


def list_roles(settings: Settings, admin: User, name: str) -> list[RoleOut]:
    """The integration's roles as last discovered (or configured), with how many hold each."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        integration = _find(session, name)
        holders = dict(
            session.exec(  # type: ignore[call-overload]
                select(Grant.role, func.count())
                .where(col(Grant.role).startswith(f"{name}/", autoescape=True), col(Grant.active).is_(True))
                .group_by(Grant.role)
            ).all()
        )
        rows = session.exec(
            select(Role, Resource)
            .join(Resource, col(Role.resource_id) == Resource.id)
            .where(Resource.integration_id == integration.id)
            .order_by(Role.path)
        ).all()
        owners: dict[int | None, list[str]] = {}
        for role_id, email in session.exec(
            select(RoleOwner.role_id, User.email)
            .join(User, col(User.id) == RoleOwner.user_id)
            .where(col(RoleOwner.role_id).in_([role.id for role, _ in rows]), col(User.active).is_(True))
            .order_by(User.email)
        ):
            owners.setdefault(role_id, []).append(email)
        return [_role_out(role, resource, holders.get(role.path, 0), owners.get(role.id)) for role, resource in rows]


def update_role(settings: Settings, admin: User, name: str, resource: str, role: str, changes: RoleUpdate) -> RoleOut:
    """Mark a role JIT-only (grants made outside Lapse become drift), or change its sensitivity."""
    require_admin(admin)
    path = f"{name}/{resource}/{role}"
    with session_scope(settings.db_url) as session:
        _find(session, name)
        row = session.exec(select(Role).where(Role.path == path)).first()
        if row is None:
            raise Refusal(RefusalKind.NOT_FOUND, f"there is no role {path!r}", field="role")
        changed = changes.model_dump(mode="json", exclude_none=True)
        if "break_glass" in changes.model_fields_set:  # null too: it takes emergency access away
            changed["break_glass"] = changes.break_glass.model_dump(mode="json") if changes.break_glass else None
            unknown = groups.problems(session, changes.break_glass.notify or []) if changes.break_glass else {}
            if unknown:
                raise Refusal(RefusalKind.INVALID, "; ".join(unknown.values()), field="break_glass.notify")
        for key, value in changed.items():
            setattr(row, key, value)
        session.add(row)
        append_audit(session, [AuditEntry(actor=admin.email, action="role.updated", target=path, details=changed)])
        holders = session.exec(
            select(func.count()).select_from(Grant).where(Grant.role == path, col(Grant.active).is_(True))
        ).one()
        owner = session.get(Resource, row.resource_id)
        assert owner is not None
        return _role_out(row, owner, int(holders), role_owners(session, row))


def list_grants(settings: Settings, admin: User, name: str, *, unlinked: bool, path: str | None) -> list[GrantOut]:
    """Active grants in this integration, as the ledger and the last discovery know them."""
    require_admin(admin)
    if path is not None and path not in set(GrantPath):
        raise Refusal(RefusalKind.INVALID, "path must be jit, birthright or external", field="path")
    with session_scope(settings.db_url, write=False) as session:
        _find(session, name)
        query = select(Grant).where(
            col(Grant.role).startswith(f"{name}/", autoescape=True), col(Grant.active).is_(True)
        )
        if unlinked:
            query = query.where(col(Grant.user_email).is_(None))
        if path is not None:
            query = query.where(Grant.path == path)
        rows = session.exec(query.order_by(Grant.role, Grant.account)).all()
    return [GrantOut.of(g) for g in rows]

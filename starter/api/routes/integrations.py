"""/api/integrations: connect target systems, test them, discover their roles and grants (admins)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from sqlmodel import Session, col, func, select
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from access.discovery import ConnectionTestResult, DiscoveryResult
from access.durations import Duration
from access.types import AuditEntry, Sensitivity
from activities.connectors import check_config
from starter import integrations
from starter.api.deps import ClientDep, CurrentUser, SettingsDep, require_admin
from starter.api.fields import FreeText, Name, RolePath, check_json
from starter.api.problems import Problem, responses
from starter.api.routes.grants import GrantOut
from store.db import append_audit, session_scope
from store.tables import Grant, Integration, Resource, Role

router = APIRouter(prefix="/api/integrations", tags=["integrations"], responses=responses(401, 403, 422))
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


class RoleUpdate(BaseModel):
    jit_only: bool | None = None
    sensitivity: Sensitivity | None = None
    description: FreeText | None = None


def _find(session: Session, name: str) -> Integration:
    integration = session.exec(select(Integration).where(Integration.name == name)).first()
    if integration is None:
        raise Problem(404, f"there is no integration {name!r}", field="name")
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
    )


@router.get("")
def list_integrations(user: CurrentUser, settings: SettingsDep) -> list[IntegrationOut]:
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(Integration).order_by(Integration.name)).all()
        return [_out(session, i) for i in rows]


@router.post("", status_code=201, responses=responses(409, 413, 503))
async def create_integration(
    body: IntegrationCreate, user: CurrentUser, settings: SettingsDep, client: ClientDep
) -> IntegrationOut:
    """Connect a target system; its discovery schedule starts at once. Test it with ``/test``."""
    require_admin(user)
    if body.discovery_every < timedelta(minutes=1):
        raise Problem(422, "discovery_every must be at least one minute (PT1M)", field="discovery_every")
    try:
        check_config(body.kind, body.config)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Problem(422, f"config{'.' + where if where else ''}: {first['msg']}", field="config") from None
    except ValueError as error:
        raise Problem(422, str(error), field="kind") from None
    if body.directory and body.kind != "ldap":
        raise Problem(422, "only an ldap integration can be the directory", field="directory")
    with session_scope(settings.db_url) as session:
        if session.exec(select(Integration).where(Integration.name == body.name)).first() is not None:
            raise Problem(409, f"an integration named {body.name!r} already exists", field="name")
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
            session, [AuditEntry(actor=user.email, action="integration.created", target=body.name, details=details)]
        )
        out = _out(session, integration)
    if integrations.discovers(integration):
        await integrations.ensure_discovery_schedule(client, settings, integration)
    return out


NameParam = Annotated[Name, Path(description="The integration's name.")]


@router.get("/{name}", responses=responses(404))
def get_integration(name: NameParam, user: CurrentUser, settings: SettingsDep) -> IntegrationOut:
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        return _out(session, _find(session, name))


@router.post("/{name}/test", responses=responses(404, 503))
async def run_connection_test(
    name: NameParam, user: CurrentUser, settings: SettingsDep, client: ClientDep
) -> ConnectionTestResult:
    """Reach the target with the integration's settings, on a worker; ``ok: false`` says what is wrong."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        _find(session, name)
    try:
        return await integrations.check_connection(client, settings, name)
    except integrations.NoWorker as error:
        raise Problem(503, str(error)) from None


@router.post("/{name}/discover", responses=responses(404, 409, 502, 503))
async def discover(name: NameParam, user: CurrentUser, settings: SettingsDep, client: ClientDep) -> DiscoveryResult:
    """Run discovery now (the schedule also runs it) and return what it found and changed."""
    require_admin(user)
    with session_scope(settings.db_url, write=False) as session:
        integration = _find(session, name)
    if not integrations.discovers(integration):
        raise Problem(409, f"integration {name!r} ({integration.kind}) has no target to discover", field="name")
    try:
        return await integrations.discover_now(client, settings, name)
    except integrations.NoWorker as error:
        raise Problem(503, str(error)) from None
    except WorkflowFailureError as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = cause.__cause__
        reason = cause.message if isinstance(cause, ApplicationError) else str(error)
        raise Problem(502, f"discovery of {name} failed: {reason}") from None


@router.get("/{name}/roles", responses=responses(404))
def list_roles(name: NameParam, user: CurrentUser, settings: SettingsDep) -> list[RoleOut]:
    """The integration's roles as last discovered (or configured), with how many hold each."""
    require_admin(user)
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
        return [_role_out(role, resource, holders.get(role.path, 0)) for role, resource in rows]


def _role_out(role: Role, resource: Resource, holders: int) -> RoleOut:
    return RoleOut(
        path=role.path,
        resource=resource.name,
        name=role.name,
        description=role.description,
        sensitivity=role.sensitivity,
        jit_only=role.jit_only,
        missing=role.missing,
        holders=holders,
    )


@router.patch("/{name}/roles/{resource}/{role:path}", responses=responses(404, 413))
def update_role(
    name: NameParam,
    resource: Annotated[Name, Path(description="The role's resource.")],
    role: Annotated[RolePath, Path(description="The role's name.")],
    body: RoleUpdate,
    user: CurrentUser,
    settings: SettingsDep,
) -> RoleOut:
    """Mark a role JIT-only (grants made outside Lapse become drift), or change its sensitivity."""
    require_admin(user)
    path = f"{name}/{resource}/{role}"
    with session_scope(settings.db_url) as session:
        _find(session, name)
        row = session.exec(select(Role).where(Role.path == path)).first()
        if row is None:
            raise Problem(404, f"there is no role {path!r}", field="role")
        changes = body.model_dump(mode="json", exclude_none=True)
        for key, value in changes.items():
            setattr(row, key, value)
        session.add(row)
        append_audit(session, [AuditEntry(actor=user.email, action="role.updated", target=path, details=changes)])
        holders = session.exec(
            select(func.count()).select_from(Grant).where(Grant.role == path, col(Grant.active).is_(True))
        ).one()
        owner = session.get(Resource, row.resource_id)
        assert owner is not None
        return _role_out(row, owner, int(holders))


@router.get("/{name}/grants", responses=responses(404))
def list_integration_grants(
    name: NameParam,
    user: CurrentUser,
    settings: SettingsDep,
    unlinked: Annotated[bool, Query(description="Only accounts that match no Lapse user.")] = False,
    path: Annotated[Name | None, Query(description="Only `jit`, `birthright` or `external` grants.")] = None,
) -> list[GrantOut]:
    """Active grants in this integration, as the ledger and the last discovery know them."""
    require_admin(user)
    if path is not None and path not in ("jit", "birthright", "external"):
        raise Problem(422, "path must be jit, birthright or external", field="path")
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

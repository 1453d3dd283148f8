"""/api/integrations: connect target systems, test them, discover their roles and grants (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from access.discovery import ConnectionTestResult, DiscoveryResult
from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import integrations
from starter.services.fields import Name, RolePath
from starter.services.grants import GrantOut
from starter.services.integrations import IntegrationCreate, IntegrationOut, RoleOut, RoleUpdate

router = APIRouter(prefix="/api/integrations", tags=["integrations"], responses=responses(401, 403, 422))

NameParam = Annotated[Name, Path(description="The integration's name.")]


@router.get("")
def list_integrations(admin: AdminUser, settings: SettingsDep) -> list[IntegrationOut]:
    return integrations.list_integrations(settings, admin)


@router.post("", status_code=201, responses=responses(409, 413, 503))
async def create_integration(
    body: IntegrationCreate, admin: AdminUser, settings: SettingsDep, client: ClientDep
) -> IntegrationOut:
    """Connect a target system; its discovery schedule starts at once. Test it with ``/test``."""
    return await integrations.create_integration(client, settings, admin, body)


@router.get("/{name}", responses=responses(404))
def get_integration(name: NameParam, admin: AdminUser, settings: SettingsDep) -> IntegrationOut:
    return integrations.get_integration(settings, admin, name)


@router.post("/{name}/test", responses=responses(404, 503))
async def run_connection_test(
    name: NameParam, admin: AdminUser, settings: SettingsDep, client: ClientDep
) -> ConnectionTestResult:
    """Reach the target with the integration's settings, on a worker; ``ok: false`` says what is wrong."""
    return await integrations.run_connection_test(client, settings, admin, name)


@router.post("/{name}/discover", responses=responses(404, 409, 502, 503))
async def discover(name: NameParam, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> DiscoveryResult:
    """Run discovery now (the schedule also runs it) and return what it found and changed."""
    return await integrations.discover(client, settings, admin, name)


@router.get("/{name}/roles", responses=responses(404))
def list_roles(name: NameParam, admin: AdminUser, settings: SettingsDep) -> list[RoleOut]:
    """The integration's roles as last discovered (or configured), with how many hold each."""
    return integrations.list_roles(settings, admin, name)


@router.patch("/{name}/roles/{resource}/{role:path}", responses=responses(404, 413))
def update_role(
    name: NameParam,
    resource: Annotated[Name, Path(description="The role's resource.")],
    role: Annotated[RolePath, Path(description="The role's name.")],
    body: RoleUpdate,
    admin: AdminUser,
    settings: SettingsDep,
) -> RoleOut:
    """Mark a role JIT-only (grants made outside Lapse become drift), or change its sensitivity."""
    return integrations.update_role(settings, admin, name, resource, role, body)


@router.get("/{name}/grants", responses=responses(404))
def list_integration_grants(
    name: NameParam,
    admin: AdminUser,
    settings: SettingsDep,
    unlinked: Annotated[bool, Query(description="Only accounts that match no Lapse user.")] = False,
    path: Annotated[Name | None, Query(description="Only `jit`, `birthright` or `external` grants.")] = None,
) -> list[GrantOut]:
    """Active grants in this integration, as the ledger and the last discovery know them."""
    return integrations.list_grants(settings, admin, name, unlinked=unlinked, path=path)

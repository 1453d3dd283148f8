"""/api/birthright: ordered birthright policies, the preview of a change, and the sync (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from access.limits import MAX_ITEMS
from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import birthright, birthright_exceptions
from starter.services.birthright import Change, PolicyIn, PolicyOut, PolicyUpdate, PreviewOut
from starter.services.fields import Name
from starter.services.syncs import SyncStateOut

router = APIRouter(prefix="/api/birthright", tags=["birthright"], responses=responses(401, 403, 422))

NameParam = Annotated[Name, Path(description="The policy's name.")]


class Order(BaseModel):
    names: list[Name] = Field(max_length=MAX_ITEMS, description="Every policy's name, in the new order.")


@router.get("/policies")
def list_policies(admin: AdminUser, settings: SettingsDep) -> list[PolicyOut]:
    """The policies in order: a role two policies grant is attributed to the first."""
    return birthright.list_policies(settings, admin)


@router.post("/policies", status_code=201, responses=responses(409, 413))
async def create_policy(body: PolicyIn, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> PolicyOut:
    """Add a policy (last, or at ``position``); the sync applies it at once."""
    return await birthright.create_policy(client, settings, admin, body)


@router.get("/policies/{name}", responses=responses(404))
def get_policy(name: NameParam, admin: AdminUser, settings: SettingsDep) -> PolicyOut:
    return birthright.get_policy(settings, admin, name)


@router.put("/policies/{name}", responses=responses(404, 413))
async def update_policy(
    name: NameParam, body: PolicyUpdate, admin: AdminUser, settings: SettingsDep, client: ClientDep
) -> PolicyOut:
    """Change a policy's groups, roles or description; the sync applies it at once."""
    return await birthright.update_policy(client, settings, admin, name, body)


@router.delete("/policies/{name}", status_code=204, responses=responses(404))
async def delete_policy(name: NameParam, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> None:
    """Delete a policy; the sync removes the grants no other policy accounts for, at once."""
    await birthright.delete_policy(client, settings, admin, name)


@router.delete("/policies/{name}/exceptions/{exception_id}", status_code=204, responses=responses(404))
async def remove_exception(
    name: NameParam,
    exception_id: Annotated[int, Path(description="The exception's id (in the policy's `exceptions`).")],
    admin: AdminUser,
    settings: SettingsDep,
    client: ClientDep,
) -> None:
    """Remove an exception an access review made: the policy grants the role to the user again, at once."""
    await birthright_exceptions.remove_exception(client, settings, admin, name, exception_id)


@router.post("/policies/order", responses=responses(413))
async def reorder_policies(body: Order, admin: AdminUser, settings: SettingsDep, client: ClientDep) -> list[PolicyOut]:
    """Put the policies in this order (every name exactly once): it decides which policy a grant is under."""
    return await birthright.reorder_policies(client, settings, admin, body.names)


@router.post("/preview", responses=responses(404, 409, 413))
def preview(
    body: Change,
    admin: AdminUser,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=0, le=100_000, description="At most this many entries per list.")] = 1000,
) -> PreviewOut:
    """The plan a change would cause, before saving it: the sync's own plan on the changed policies. Saves nothing."""
    return birthright.preview(settings, admin, body, limit=limit)


@router.post("/sync", status_code=202, responses=responses(503))
async def sync_now(admin: AdminUser, settings: SettingsDep, client: ClientDep) -> dict[str, str]:
    """Run the birthright sync now (one run at a time, at most one more waiting)."""
    return await birthright.sync_now(client, settings, admin)


@router.get("/sync")
def sync_state(admin: AdminUser, settings: SettingsDep) -> SyncStateOut:
    """The last run: when it started and finished, what it planned and did, and why it failed if it did."""
    return birthright.last_sync(settings, admin)

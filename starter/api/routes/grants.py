"""/api/grants: what is held, through which path, since and until when; admins end grants here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from starter.api.deps import AdminUser, CallerSignIn, ClientDep, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import grants
from starter.services.fields import MAX_ID, FreeText
from starter.services.grants import GrantOut, RevokedOut

router = APIRouter(prefix="/api/grants", tags=["grants"], responses=responses(401, 413, 422))


@router.get("", responses=responses(403))
def list_grants(
    user: CurrentUser,
    settings: SettingsDep,
    everyone: Annotated[bool, Query(alias="all", description="Admins: everyone's grants.")] = False,
) -> list[GrantOut]:
    """Your active grants (all active grants for an admin with ``?all=true``), soonest expiry first."""
    return grants.list_grants(settings, user, everyone=everyone)


class RevokeBody(BaseModel):
    comment: FreeText = ""


@router.post("/{grant_id}/revoke", responses=responses(403, 404, 409, 503))
async def revoke_grant(
    grant_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The grant's id.")],
    body: RevokeBody,
    admin: AdminUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RevokedOut:
    """Admins: end a grant from the permissions table. A JIT grant ends through its request; a birthright
    grant comes back at the next birthright sync unless its policy changes; an external one is revoked in
    the target (discovery records it again if someone grants it there again). Ending someone's JIT grant under
    an approval workflow that says `reauthenticate_within` needs a browser sign-in that recent (see
    `POST /api/requests/{id}/approve`)."""
    return await grants.revoke_grant(client, settings, admin, grant_id, comment=body.comment, sign_in=sign_in)

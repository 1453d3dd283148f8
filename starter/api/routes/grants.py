"""/api/grants: what is held, through which path, since and until when; admins end grants here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlmodel import col, select

from access.requests import RequestStatus
from starter import lifecycle
from starter.api.deps import ClientDep, CurrentUser, SettingsDep, require_admin
from starter.api.fields import MAX_ID, FreeText
from starter.api.problems import responses
from store.db import session_scope
from store.tables import Grant

router = APIRouter(prefix="/api/grants", tags=["grants"], responses=responses(401, 413, 422))


class GrantOut(BaseModel):
    id: int
    """For ``POST /api/grants/{id}/revoke``."""
    role: str
    account: str
    user: str | None
    """``null``: the account matches no Lapse user (unlinked)."""
    path: str
    """``jit`` (a request), ``birthright`` (a policy) or ``external`` (found in the target)."""
    request_id: str | None
    policy: str | None = None
    """The birthright policy a ``birthright`` grant was made under."""
    returns_on_sync: bool = False
    """A birthright grant: revoking it by hand is temporary, the next birthright sync grants it again
    while the policy applies. Change the policy (``/api/birthright/policies``) to take it away for good."""
    granted_at: datetime
    expires_at: datetime | None
    """``null`` for standing access."""

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        assert grant.id is not None
        return cls(
            id=grant.id,
            role=grant.role,
            account=grant.account,
            user=grant.user_email,
            path=grant.path,
            request_id=grant.request_id,
            policy=grant.policy,
            returns_on_sync=grant.path == "birthright",
            granted_at=grant.granted_at,
            expires_at=grant.expires_at,
        )


@router.get("", responses=responses(403))
def list_grants(
    user: CurrentUser,
    settings: SettingsDep,
    everyone: Annotated[bool, Query(alias="all", description="Admins: everyone's grants.")] = False,
) -> list[GrantOut]:
    """Your active grants (all active grants for an admin with ``?all=true``), soonest expiry first."""
    query = select(Grant).where(col(Grant.active).is_(True))
    if everyone:
        require_admin(user)
    else:
        query = query.where(Grant.user_email == user.email)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(query.order_by(col(Grant.expires_at).nulls_last(), col(Grant.role))).all()
    return [GrantOut.of(g) for g in rows]


class RevokeBody(BaseModel):
    comment: FreeText = ""


class RevokedOut(BaseModel):
    grant: GrantOut
    still_held: bool
    """Another active grant still covers the account and role, so access stays."""
    returns_on_sync: bool
    """A birthright grant: the next birthright sync grants it again while its policy applies."""
    request: RequestStatus | None = None
    """For a JIT grant: its request, which the revoke ended."""


@router.post("/{grant_id}/revoke", responses=responses(403, 404, 409, 503))
async def revoke_grant(
    grant_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The grant's id.")],
    body: RevokeBody,
    user: CurrentUser,
    settings: SettingsDep,
    client: ClientDep,
) -> RevokedOut:
    """Admins: end a grant from the permissions table. A JIT grant ends through its request; a birthright
    grant comes back at the next birthright sync unless its policy changes; an external one is revoked in
    the target (discovery records it again if someone grants it there again)."""
    require_admin(user)
    ended, result, request = await lifecycle.revoke_grant(client, settings, user, grant_id, comment=body.comment)
    return RevokedOut(
        grant=GrantOut.of(ended),
        still_held=result.still_held if result else False,
        returns_on_sync=result.returns_on_sync if result else False,
        request=request,
    )

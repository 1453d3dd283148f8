"""GET /api/grants: what is held, through which path, since and until when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import col, select

from access.db import session_scope
from access.tables import Grant
from starter.api.deps import CurrentUser, SettingsDep, require_admin

router = APIRouter(prefix="/api/grants", tags=["grants"])


class GrantOut(BaseModel):
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
        return cls(
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


@router.get("")
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

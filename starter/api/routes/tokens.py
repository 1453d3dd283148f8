"""Who am I, API tokens (``/api/tokens``) and service accounts (``/api/service-accounts``, admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from starter.api.deps import AdminUser, CallerIdentity, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import tokens
from starter.services.fields import Email, Name
from starter.services.tokens import (
    ServiceAccountCreate,
    ServiceAccountOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
)

router = APIRouter(tags=["tokens"], responses=responses(401, 403))

TokenId = Annotated[Name, Path(description="The token's id, as listed (not the token).")]
AccountEmail = Annotated[Email, Path(description="The service account's email.")]


class Me(BaseModel):
    email: str
    name: str
    admin: bool
    """Whether the call may use admin rights (a token without the `admin` scope may not)."""
    service_account: bool
    via: Literal["token", "session", "proxy"]
    scopes: list[tokens.Scope] | None
    """The token's scopes; null for a browser session or the proxy's header."""
    token_id: str | None
    session_expires_at: datetime | None


@router.get("/api/me")
def who_am_i(identity: CallerIdentity) -> Me:
    """Who the call is made as, and how: any valid token may ask."""
    user = identity.user
    return Me(
        email=user.email,
        name=user.name,
        admin=user.is_admin,
        service_account=user.is_service,
        via=identity.via,
        scopes=sorted(identity.scopes, key=list(tokens.Scope).index) if identity.scopes is not None else None,
        token_id=identity.token_id,
        session_expires_at=identity.session.expires_at if identity.session else None,
    )


@router.post("/api/tokens", status_code=201, responses=responses(409, 413, 422))
def create_token(body: TokenCreate, user: CurrentUser, settings: SettingsDep) -> TokenCreated:
    """A new token acting as you, within its scopes: the answer's `token` is shown this once."""
    return tokens.create_token(settings, user, body)


@router.get("/api/tokens")
def list_tokens(user: CurrentUser, settings: SettingsDep) -> list[TokenOut]:
    """Your tokens, newest first, with their last use (never the tokens themselves)."""
    return tokens.list_tokens(settings, user)


@router.delete("/api/tokens/{token_id}", responses=responses(404))
def revoke_token(token_id: TokenId, identity: CallerIdentity, settings: SettingsDep) -> TokenOut:
    """Revoke one of your tokens (admins: anyone's) at once. A token may revoke itself, and no other."""
    return tokens.revoke_token(settings, identity.user, token_id, with_token=identity.token_id)


@router.get("/api/service-accounts")
def list_service_accounts(admin: AdminUser, settings: SettingsDep) -> list[ServiceAccountOut]:
    """Service accounts and their tokens (admins)."""
    return tokens.list_service_accounts(settings, admin)


@router.post("/api/service-accounts", status_code=201, responses=responses(409, 413, 422))
def create_service_account(body: ServiceAccountCreate, admin: AdminUser, settings: SettingsDep) -> ServiceAccountOut:
    """A non-human user that holds API tokens and never signs in (admins)."""
    return tokens.create_service_account(settings, admin, body)


@router.post("/api/service-accounts/{email}/tokens", status_code=201, responses=responses(404, 409, 413, 422))
def create_service_token(
    email: AccountEmail, body: TokenCreate, admin: AdminUser, settings: SettingsDep
) -> TokenCreated:
    """A new token for a service account (admins): the answer's `token` is shown this once."""
    return tokens.create_service_token(settings, admin, email, body)


@router.delete("/api/service-accounts/{email}", responses=responses(404))
def deactivate_service_account(email: AccountEmail, admin: AdminUser, settings: SettingsDep) -> ServiceAccountOut:
    """Deactivate a service account and revoke its tokens (admins)."""
    return tokens.deactivate_service_account(settings, admin, email)

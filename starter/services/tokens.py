"""API tokens for scripts and CI, and the service accounts (non-human users) that hold them.

A token is ``lapse_`` and 43 random characters, shown once when made; the app DB keeps only its SHA-256. It
acts as its owner, within its scopes, until it expires or is revoked, and never for more than its owner may
do: it dies with its owner's deactivation, an ``admin`` scope is only given to an admin's token, and every
service still checks the owner's own rights. Service accounts are made by admins, hold tokens, and never
sign in to a browser.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import update
from sqlmodel import Session, col, func, select

from access.durations import Duration
from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.services.authorization import require_admin
from starter.services.fields import Email, FreeText, Name
from store import catalog
from store.audit_log import append_audit
from store.credentials_end import end_credentials
from store.db import session_scope
from store.settings import Settings
from store.tables import SERVICE_ACCOUNT, ApiToken, User

TOKEN_PREFIX = "lapse_"
_TOKEN_PATTERN = re.compile(r"lapse_[A-Za-z0-9_-]{43}")
MAX_LIVE_TOKENS = 50
"""Tokens one owner may hold at once (not expired, not revoked): a bound, and a hint to revoke old ones."""
TOUCH_EVERY = timedelta(minutes=1)
"""A token's ``last_used_at`` is written at most this often."""


class Scope(StrEnum):
    """What a token may be used for; each route needs one (``starter/api/scopes.py``)."""

    READ = "read"
    """Reading: every ``GET``."""
    REQUEST = "request"
    """Asking for access, and cancelling, extending, giving back one's own."""
    APPROVE = "approve"
    """Approving and denying what its owner is eligible to decide."""
    ADMIN = "admin"
    """Its owner's admin rights (an admin's tokens only); without it, the owner acts as a non-admin."""


ScopeList = Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]

TokenName = Annotated[Name, StringConstraints(min_length=1)]


class TokenCreate(BaseModel):
    name: TokenName = Field(description="What the token is for (e.g. `ci-deploy`), to recognise it in the list.")
    scopes: ScopeList = Field(description="Of `read`, `request`, `approve`, `admin` (admins' tokens only).")
    expires_in: Duration | None = Field(
        default=None, description="How long it is valid for: at most `LAPSE_TOKEN_MAX_LIFETIME` (default P1Y)."
    )


class TokenOut(BaseModel):
    id: str
    name: str
    owner: str
    scopes: list[Scope]
    created_at: datetime
    created_by: str
    expires_at: datetime
    last_used_at: datetime | None
    """The last call made with it (to the minute)."""
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]

    @classmethod
    def of(cls, row: ApiToken, now: datetime) -> TokenOut:
        state: Literal["active", "expired", "revoked"] = (
            "revoked" if row.revoked_at is not None else "expired" if row.expires_at <= now else "active"
        )
        return cls(
            id=row.id,
            name=row.name,
            owner=row.owner,
            scopes=[Scope(s) for s in row.scopes],
            created_at=row.created_at,
            created_by=row.created_by,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            state=state,
        )


class TokenCreated(TokenOut):
    token: str
    """The token itself: shown this once, never again (Lapse keeps only its hash)."""


class ServiceAccountCreate(BaseModel):
    email: Email = Field(description="Its name as an email address (`ci@example.com`); no person may have it.")
    name: FreeText = Field(default="", max_length=200, description="What it is for.")
    admin: bool = Field(default=False, description="May hold tokens with the `admin` scope.")


class ServiceAccountOut(BaseModel):
    email: str
    name: str
    admin: bool
    active: bool
    tokens: list[TokenOut]


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token acts as, and for what."""

    user: User
    token_id: str
    scopes: frozenset[Scope]
    expires_at: datetime


def token_hash(token: str) -> str:
    """What the app DB stores for a token: its SHA-256 (hex). The token is 256 random bits: no slow hash needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


# --- using one -----------------------------------------------------------------------------


def token_user(settings: Settings, token: str) -> TokenIdentity | None:
    """The identity a token stands for, or None: not a token, unknown, revoked, expired, or its owner no longer
    active. Using it records when (at most once a minute)."""
    token = token.strip()
    if not _TOKEN_PATTERN.fullmatch(token):
        return None
    key = token_hash(token)
    now = _now()
    with session_scope(settings.db_url, write=False) as session:
        found = session.exec(
            select(ApiToken, User).join(User, col(User.email) == ApiToken.owner).where(ApiToken.hash == key)
        ).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or row.expires_at <= now:
        return None
    if not user.active:  # deactivated some way that did not end its tokens: end them now, for good
        with session_scope(settings.db_url) as session:
            end_credentials(session, {user.email: "its owner is no longer active"}, actor="lapse", at=now)
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        with session_scope(settings.db_url) as session:
            session.execute(update(ApiToken).where(col(ApiToken.id) == row.id).values(last_used_at=now))
    return TokenIdentity(
        user=user, token_id=row.id, scopes=frozenset(Scope(s) for s in row.scopes), expires_at=row.expires_at
    )


# --- making, listing and revoking one's own ------------------------------------------------


def create_token(settings: Settings, owner: User, body: TokenCreate) -> TokenCreated:
    """A new token acting as ``owner`` (the caller), shown this once."""
    return _mint(settings, owner.email, body, creator=owner)


def list_tokens(settings: Settings, user: User) -> list[TokenOut]:
    """The caller's tokens, newest first, with when each was last used."""
    now = _now()
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(
            select(ApiToken).where(ApiToken.owner == user.email).order_by(col(ApiToken.created_at).desc())
        ).all()
    return [TokenOut.of(row, now) for row in rows]


def revoke_token(settings: Settings, user: User, token_id: str, *, with_token: str | None = None) -> TokenOut:
    """Revoke a token at once: the caller's own, or (admins) anyone's. Revoking a revoked one changes nothing.
    A call made with a token (``with_token``, its id) may revoke that token only: a stolen token cannot take
    its owner's others down with it."""
    if with_token is not None and with_token != token_id:
        raise Refusal(RefusalKind.FORBIDDEN, "an API token can revoke itself only: sign in to revoke others")
    now = _now()
    with session_scope(settings.db_url) as session:
        row = session.get(ApiToken, token_id)
        if row is None or (row.owner != user.email and not user.is_admin):
            raise Refusal(RefusalKind.NOT_FOUND, f"you have no token {token_id}", field="token_id")
        if row.revoked_at is None:
            row.revoked_at = now
            session.add(row)
            entry = AuditEntry(
                actor=user.email,
                action="token.revoked",
                target=f"token:{row.id}",
                details={"owner": row.owner, "name": row.name},
                at=now,
            )
            append_audit(session, [entry])
        return TokenOut.of(row, now)


# --- service accounts (admins) ---------------------------------------------------------------


def create_service_account(settings: Settings, admin: User, body: ServiceAccountCreate) -> ServiceAccountOut:
    """A new service account: a user that holds tokens and never signs in."""
    require_admin(admin)
    email = body.email.strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in email):
        raise Refusal(RefusalKind.INVALID, f"{body.email!r} is not an email address", field="email")
    with session_scope(settings.db_url) as session:
        if catalog.find_user(session, email) is not None:
            raise Refusal(RefusalKind.CONFLICT, f"{email} is already a Lapse user", field="email")
        account = User(email=email, name=body.name, is_admin=body.admin, kind=SERVICE_ACCOUNT, source="service-account")
        session.add(account)
        details = {"name": body.name, "admin": body.admin}
        append_audit(
            session,
            [AuditEntry(actor=admin.email, action="service_account.created", target=email, details=details)],
        )
    return ServiceAccountOut(email=email, name=body.name, admin=body.admin, active=True, tokens=[])


def list_service_accounts(settings: Settings, admin: User) -> list[ServiceAccountOut]:
    require_admin(admin)
    now = _now()
    with session_scope(settings.db_url, write=False) as session:
        accounts = session.exec(select(User).where(User.kind == SERVICE_ACCOUNT).order_by(User.email)).all()
        tokens = session.exec(
            select(ApiToken)
            .join(User, col(User.email) == ApiToken.owner)
            .where(User.kind == SERVICE_ACCOUNT)
            .order_by(col(ApiToken.created_at).desc())
        ).all()
    held: dict[str, list[TokenOut]] = {}
    for row in tokens:
        held.setdefault(row.owner, []).append(TokenOut.of(row, now))
    return [
        ServiceAccountOut(email=a.email, name=a.name, admin=a.is_admin, active=a.active, tokens=held.get(a.email, []))
        for a in accounts
    ]


def create_service_token(settings: Settings, admin: User, email: str, body: TokenCreate) -> TokenCreated:
    """A new token for a service account (admins), shown this once."""
    require_admin(admin)
    return _mint(settings, email.strip().lower(), body, creator=admin, service=True)


def deactivate_service_account(settings: Settings, admin: User, email: str) -> ServiceAccountOut:
    """Deactivate a service account: its tokens are revoked at once, audited, and stay so if it is ever
    reactivated."""
    require_admin(admin)
    email = email.strip().lower()
    now = _now()
    with session_scope(settings.db_url) as session:
        account = _service_account(session, email)
        account.active = False
        session.add(account)
        append_audit(
            session, [AuditEntry(actor=admin.email, action="service_account.deactivated", target=email, at=now)]
        )
        end_credentials(session, {email: "service account deactivated"}, actor=admin.email, at=now)
        rows = session.exec(select(ApiToken).where(ApiToken.owner == email)).all()
        return ServiceAccountOut(
            email=email,
            name=account.name,
            admin=account.is_admin,
            active=False,
            tokens=[TokenOut.of(row, now) for row in rows],
        )


def _service_account(session: Session, email: str) -> User:
    account = catalog.find_user(session, email)
    if account is None or not account.is_service:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no service account {email}", field="email")
    return account


# --- minting -------------------------------------------------------------------------------


def _mint(
    settings: Settings, owner_email: str, body: TokenCreate, *, creator: User, service: bool = False
) -> TokenCreated:
    lifetime = body.expires_in or settings.token_default_lifetime
    if lifetime > settings.token_max_lifetime:
        raise Refusal(
            RefusalKind.INVALID,
            f"a token is valid for at most {settings.token_max_lifetime.days} days (LAPSE_TOKEN_MAX_LIFETIME)",
            field="expires_in",
        )
    scopes = sorted(set(body.scopes), key=list(Scope).index)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = _now()
    with session_scope(settings.db_url) as session:
        owner = _service_account(session, owner_email) if service else catalog.find_user(session, owner_email)
        if owner is None or not owner.active:
            raise Refusal(RefusalKind.CONFLICT, f"{owner_email} is not an active Lapse user", field="email")
        if Scope.ADMIN in scopes and not owner.is_admin:
            raise Refusal(
                RefusalKind.FORBIDDEN,
                f"{owner.email} is not an admin: a token of theirs cannot have the admin scope",
                field="scopes",
            )
        live = session.exec(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.owner == owner.email, col(ApiToken.revoked_at).is_(None), ApiToken.expires_at > now)
        ).one()
        if live >= MAX_LIVE_TOKENS:
            raise Refusal(
                RefusalKind.CONFLICT,
                f"{owner.email} already holds {live} tokens, the most allowed at once: revoke one first",
            )
        row = ApiToken(
            id=secrets.token_hex(8),
            owner=owner.email,
            name=body.name,
            hash=token_hash(token),
            scopes=[s.value for s in scopes],
            created_at=now,
            created_by=creator.email,
            expires_at=now + lifetime,
        )
        session.add(row)
        details = {"owner": owner.email, "name": body.name, "scopes": row.scopes, "expires_at": row.expires_at}
        append_audit(
            session,
            [AuditEntry(actor=creator.email, action="token.created", target=f"token:{row.id}", details=details)],
        )
    return TokenCreated(**TokenOut.of(row, now).model_dump(), token=token)

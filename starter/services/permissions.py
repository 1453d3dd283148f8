"""The permissions table (admins): every active grant, filtered, sorted and paged by keyset; and revoking a
selection of grants, after seeing what revoking each would do.

Each page is one index range (``Grant``'s indexes, migration 0011), whatever the filters and the sort: the
next page starts after the last row's (sort key, id), never at an offset, so page 1,000 costs what page 1
does. A page's cursor is opaque to callers and validated on the way back in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from access.errors import Refusal, RefusalKind
from access.grants import GrantPath
from starter.services import grants
from starter.services.authorization import require_admin
from starter.services.fields import Moment, utc_moment
from starter.services.grants import GrantOut, RevokedOut
from starter.services.recent_sign_in import SignIn
from store.db import session_scope
from store.grant_pages import LedgerFilter, Position, read_page
from store.settings import Settings
from store.tables import AccessRequest, Grant, User

PAGE_SIZE = 50
MAX_SELECTION = 100
"""Grants one "revoke selected" may end: each is a workflow to start and wait for."""
REVOKES_AT_ONCE = 4
"""Revokes of one selection running at the same time: the targets are called one grant at a time each."""


class GrantFilter(BaseModel):
    """What the table shows: active grants matching every filter given."""

    user: str | None = None
    """The holder's email (exact, case-insensitive)."""
    integration: str | None = None
    """An integration's name: its grants, on any of its resources."""
    resource: str | None = None
    """A resource as ``integration/resource``."""
    role: str | None = None
    """A role path or the start of one: ``ledger`` or ``ledger/prod-db`` match every role under it."""
    path: GrantPath | None = None
    expiring_before: Moment | None = None
    """Grants ending before this moment (UTC without a zone); standing grants never do."""

    @classmethod
    def asked(cls, **given: str) -> GrantFilter:
        """The filter a form or a query string asks for (blank fields ask for nothing); a 422 naming the field."""
        try:
            return cls.model_validate({name: value.strip() for name, value in given.items() if value.strip()})
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise Refusal(RefusalKind.INVALID, f"{field}: {first['msg']}", field=field) from None


class SortKey(StrEnum):
    """What the table is ordered by, then by grant id."""

    SINCE = "since"
    UNTIL = "until"
    """Standing grants (no end) come last, either way."""
    USER = "user"
    """Unlinked accounts (no Lapse user) come last, either way."""
    ROLE = "role"


_COLUMNS: dict[SortKey, Any] = {
    SortKey.SINCE: Grant.granted_at,
    SortKey.UNTIL: Grant.expires_at,
    SortKey.USER: Grant.user_email,
    SortKey.ROLE: Grant.role,
}
_NULLABLE = {SortKey.UNTIL, SortKey.USER}
_TIMES = {SortKey.SINCE, SortKey.UNTIL}


class GrantPage(BaseModel):
    grants: list[GrantOut]
    next_cursor: str | None
    """The ``cursor`` that reads the next page, in the same order; None on the last."""


def list_permissions(
    settings: Settings,
    admin: User,
    filters: GrantFilter,
    *,
    sort: SortKey = SortKey.SINCE,
    descending: bool = False,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> GrantPage:
    """Active grants matching ``filters`` in ``sort`` order (ties by id), the ``limit`` after ``cursor``."""
    require_admin(admin)
    after = _read_cursor(cursor, sort, descending) if cursor else None
    scopes = [filters.integration, filters.resource, filters.role]
    found = LedgerFilter(
        user=filters.user.lower() if filters.user else None,
        scopes=tuple(s.strip("/") for s in scopes if s and s.strip("/")),
        path=filters.path.value if filters.path else None,
        expiring_before=filters.expiring_before,
    )
    key = _COLUMNS[sort].key
    with session_scope(settings.db_url, write=False) as session:
        rows = read_page(session, found, key=key, descending=descending, after=after, limit=limit + 1)
    page = rows[:limit]
    next_cursor = _cursor(sort, descending, page[-1]) if len(rows) > limit else None
    return GrantPage(grants=[GrantOut.of(g) for g in page], next_cursor=next_cursor)


# --- the cursor --------------------------------------------------------------------------------------


def _cursor(sort: SortKey, descending: bool, last: Grant) -> str:
    key = getattr(last, _COLUMNS[sort].key)
    if isinstance(key, datetime):
        key = key.astimezone(UTC).isoformat()
    position = [sort.value, "desc" if descending else "asc", key is None, key, last.id]
    # UTF-8, not \u escapes: a role path of MAX_ROLE_PATH characters of any script stays within MAX_CURSOR.
    text = json.dumps(position, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_cursor(cursor: str, sort: SortKey, descending: bool) -> Position:
    """The position a cursor says, if it is one this order made; a 422 otherwise."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        order, direction, standing, key, grant_id = json.loads(text)
        position = Position(standing=standing, key=key, id=grant_id)
        if order != sort.value or direction != ("desc" if descending else "asc"):
            raise ValueError("made for another order")
        if not isinstance(standing, bool) or type(grant_id) is not int or not 0 < grant_id < 2**31:
            raise ValueError("not a position")
        if standing != (key is None) or (standing and sort not in _NULLABLE):
            raise ValueError("not a position")
        if not standing:
            if not isinstance(key, str) or len(key) > 1000:
                raise ValueError("not a position")
            if sort in _TIMES:
                moment = datetime.fromisoformat(key)
                if moment.tzinfo is None:
                    raise ValueError("a time without its zone")
                position.key = utc_moment(moment)  # one no database can compare with is no position either
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error, ValidationError):
        raise Refusal(
            RefusalKind.INVALID,
            "cursor: this page link is not one the permissions table made for this order; start from the first page",
            field="cursor",
        ) from None
    return position


# --- revoking a selection ----------------------------------------------------------------------------


class Effect(StrEnum):
    """What revoking a grant would do."""

    REQUEST_ENDS = "request_ends"
    """A JIT grant: its request ends (revoked)."""
    RETURNS_ON_SYNC = "returns_on_sync"
    """A birthright grant: the next birthright sync grants it again unless its policy changes."""
    REMOVED_IN_TARGET = "removed_in_target"
    """An external grant: the role is taken away in the target."""
    ALREADY_ENDED = "already_ended"
    NOT_FOUND = "not_found"


class GrantImpact(BaseModel):
    grant_id: int
    effect: Effect
    grant: GrantOut | None = None
    requester: str | None = None
    """A JIT grant's requester."""
    integration: str | None = None
    """Where the role is held (the role path's first part)."""
    still_held_by: list[int] = []
    """Other active grants, not in the selection, covering the same account and role: access stays."""

    @property
    def revocable(self) -> bool:
        return self.effect not in (Effect.ALREADY_ENDED, Effect.NOT_FOUND)


class Impact(BaseModel):
    grants: list[GrantImpact]
    revocable: list[int]
    """The ids a confirmation would revoke, in the order selected."""


class RevokeOutcome(BaseModel):
    grant_id: int
    done: bool
    reason: str | None = None
    """Why it was refused."""
    revoked: RevokedOut | None = None


def selection(grant_ids: Sequence[int]) -> list[int]:
    """The grants selected, each once, in order; at least one and at most ``MAX_SELECTION``."""
    chosen = list(dict.fromkeys(grant_ids))
    if not chosen:
        raise Refusal(RefusalKind.INVALID, "grant_id: select at least one grant to revoke", field="grant_id")
    if len(chosen) > MAX_SELECTION:
        raise Refusal(
            RefusalKind.INVALID,
            f"grant_id: {len(chosen)} grants are selected; revoke at most {MAX_SELECTION} at a time",
            field="grant_id",
        )
    return chosen


def impact(settings: Settings, admin: User, grant_ids: Sequence[int]) -> Impact:
    """What revoking each selected grant would do, read from the ledger; nothing changes."""
    require_admin(admin)
    chosen = selection(grant_ids)
    with session_scope(settings.db_url, write=False) as session:
        found = {g.id: g for g in session.exec(select(Grant).where(col(Grant.id).in_(chosen))).all()}
        active = [g for g in found.values() if g.active]
        requests = [g.request_id for g in active if g.path == GrantPath.JIT and g.request_id]
        requesters = dict(
            session.exec(
                select(AccessRequest.id, AccessRequest.requester).where(col(AccessRequest.id).in_(requests))
            ).all()
        )
        cover = _covering(session, active, exclude=set(chosen))
    impacts = []
    for grant_id in chosen:
        grant = found.get(grant_id)
        if grant is None:
            impacts.append(GrantImpact(grant_id=grant_id, effect=Effect.NOT_FOUND))
            continue
        out = GrantOut.of(grant)
        if not grant.active:
            impacts.append(GrantImpact(grant_id=grant_id, effect=Effect.ALREADY_ENDED, grant=out))
            continue
        effect = {
            GrantPath.JIT: Effect.REQUEST_ENDS,
            GrantPath.BIRTHRIGHT: Effect.RETURNS_ON_SYNC,
        }.get(GrantPath(grant.path), Effect.REMOVED_IN_TARGET)
        if effect is Effect.REQUEST_ENDS and not grant.request_id:
            effect = Effect.REMOVED_IN_TARGET  # a JIT row with no request (made before requests were kept)
        impacts.append(
            GrantImpact(
                grant_id=grant_id,
                effect=effect,
                grant=out,
                requester=requesters.get(grant.request_id or "", grant.user_email),
                integration=grant.role.split("/", 1)[0],
                still_held_by=cover.get((grant.account, grant.role), []),
            )
        )
    return Impact(grants=impacts, revocable=[i.grant_id for i in impacts if i.revocable])


def _covering(session: Session, held: list[Grant], *, exclude: set[int]) -> dict[tuple[str, str], list[int]]:
    """For each (account, role) of ``held``: the other active grants covering it that are not being revoked
    too (overlapping grants are counted per account and role: revoking one leaves the access to the others)."""
    found: dict[tuple[str, str], list[int]] = {}
    pairs = {(g.account, g.role) for g in held}
    for account, role in pairs:  # at most MAX_SELECTION lookups, each on ix_grant_account_role_active
        ids = session.exec(
            select(Grant.id)
            .where(Grant.account == account, Grant.role == role, col(Grant.active).is_(True))
            .where(col(Grant.id).not_in(exclude))
            .order_by(col(Grant.id))
            .limit(5)
        ).all()
        if ids:
            found[(account, role)] = [i for i in ids if i is not None]
    return found


async def revoke_selected(
    client: Client, settings: Settings, admin: User, grant_ids: Sequence[int], *, comment: str, sign_in: SignIn
) -> list[RevokeOutcome]:
    """Revoke each selected grant through ``grants.revoke_grant`` (the path a single revoke takes, audited
    each), a few at a time; the outcome of each, in the order selected: done, or refused and why."""
    require_admin(admin)
    chosen = selection(grant_ids)
    running = asyncio.Semaphore(REVOKES_AT_ONCE)

    async def revoke(grant_id: int) -> RevokeOutcome:
        async with running:
            try:
                revoked = await grants.revoke_grant(
                    client=client, settings=settings, admin=admin, grant_id=grant_id, comment=comment, sign_in=sign_in
                )
            except Refusal as refusal:
                return RevokeOutcome(grant_id=grant_id, done=False, reason=refusal.message)
            except RPCError as error:
                reason = f"the workflow service is unavailable, try again shortly ({error.message})"
                return RevokeOutcome(grant_id=grant_id, done=False, reason=reason)
            return RevokeOutcome(grant_id=grant_id, done=True, revoked=revoked)

    return list(await asyncio.gather(*(revoke(grant_id) for grant_id in chosen)))

"""Birthright policies (admins): kept in order, previewed before a change, applied by the birthright sync.

Every change is audited and starts the birthright sync at once through its schedule; a preview runs
the sync's own plan on the changed policies and saves nothing. Changes hold one lock, so two admins
editing at once never leave the positions with a gap or a repeat.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select
from temporalio.client import Client
from temporalio.service import RPCError

from access import names
from access.birthright import BirthrightPlan, PlanItem, PolicySpec
from access.errors import Refusal, RefusalKind
from access.grants import GrantPath, birthright_barred
from access.limits import MAX_ITEMS
from access.types import AuditEntry
from activities.connectors import built
from starter.services.authorization import require_admin
from starter.services.birthright_exceptions import ExceptionOut, exceptions_by_policy
from starter.services.fields import FreeText, Name, RolePath
from starter.services.syncs import SyncStateOut, next_run, sync_state, trigger_now
from store import catalog
from store import groups as group_refs
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.settings import Settings
from store.tables import BirthrightPolicy, Grant, Integration, Resource, Role, User

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$"
LOCK = "birthright-policies"
"""The lock every change holds, and the audit target of a reorder."""


class PolicyIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Letters, digits, spaces, `_`, `.`, `-`.")
    groups: list[Name] = Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description="Members of any of these groups get the roles: `name` (the organisation file's group), "
        "`source:name` or `source:#external-id` (a directory's); each must name exactly one group.",
    )
    roles: list[RolePath] = Field(
        min_length=1, max_length=MAX_ITEMS, description="Role paths `integration/resource/role`."
    )
    description: FreeText = ""
    position: int | None = Field(
        default=None, ge=0, le=MAX_ITEMS, description="Where in the order (0 = first); default last."
    )


class PolicyUpdate(BaseModel):
    groups: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    roles: list[RolePath] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    description: FreeText | None = None


class PolicyOut(BaseModel):
    name: str
    position: int
    groups: list[str]
    roles: list[str]
    description: str
    grants: int
    """Active birthright grants attributed to this policy."""
    exceptions: list[ExceptionOut] = []
    """The users it no longer grants a role to: an access review revoked it."""


class CreateChange(BaseModel):
    action: Literal["create"]
    policy: PolicyIn


class UpdateChange(BaseModel):
    action: Literal["update"]
    name: Name
    changes: PolicyUpdate


class DeleteChange(BaseModel):
    action: Literal["delete"]
    name: Name


class ReorderChange(BaseModel):
    action: Literal["reorder"]
    names: list[Name] = Field(max_length=MAX_ITEMS)


Change = Annotated[CreateChange | UpdateChange | DeleteChange | ReorderChange, Field(discriminator="action")]


class PreviewItem(BaseModel):
    user: str
    role: str
    policy: str


class PreviewOut(BaseModel):
    """What the next sync would do if the change were saved: who gains and who loses which role."""

    gains: list[PreviewItem]
    losses: list[PreviewItem]
    """``policy``: the policy the lost grant was made under."""
    relabels: list[PreviewItem]
    """Grants kept, now accounted for by ``policy``."""
    excepted: list[PreviewItem] = []
    """Not granted by ``policy`` because of an exception on it (an access review revoked it); another policy
    may still grant the role (then it is in no other list)."""
    counts: dict[str, Any]
    """``add``, ``remove``, ``relabel`` in all, and ``by_policy`` and ``by_role``."""
    truncated: bool
    """The lists stop at ``limit`` entries each; ``counts`` are complete."""


# --- reading and checking -----------------------------------------------------------------


def _ordered(session: Session) -> list[BirthrightPolicy]:
    return list(
        session.exec(select(BirthrightPolicy).order_by(col(BirthrightPolicy.position), col(BirthrightPolicy.id)))
    )


def _find(session: Session, name: str) -> BirthrightPolicy:
    policy = session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == name)).first()
    if policy is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no birthright policy {name!r}", field="name")
    return policy


def _invalid(message: str, field: str) -> Refusal:
    return Refusal(RefusalKind.INVALID, message, field=field)


def _check(session: Session, groups: list[str] | None, roles: list[str] | None, *, prefix: str = "") -> None:
    """Refuse unknown groups and roles (and roles the target no longer has, or cannot hold for good)."""
    if groups is not None:
        # Each must name exactly one group of one source (``store.groups``): an unknown or ambiguous
        # reference is refused, never merged with namesakes.
        problems = group_refs.problems(session, groups)
        for group in groups:
            if group in problems:
                raise _invalid(problems[group], f"{prefix}groups")
    if roles is not None:
        found = {r.path: r for r in session.exec(select(Role).where(col(Role.path).in_(roles)))}
        for path in roles:
            if path not in found:
                raise _invalid(f"unknown role {path!r} (give integration/resource/role)", f"{prefix}roles")
            if found[path].missing:
                raise _invalid(f"role {path!r} is missing in its target", f"{prefix}roles")
            resource = session.get(Resource, found[path].resource_id)
            integration = session.get(Integration, resource.integration_id) if resource else None
            if integration is not None:
                barred = birthright_barred(integration.name, built(integration.kind, integration.config))
                if barred:
                    raise _invalid(f"role {path!r} is in {barred}", f"{prefix}roles")


def _check_order(session: Session, names_: list[str], *, field: str) -> list[BirthrightPolicy]:
    policies = {p.name: p for p in _ordered(session)}
    if len(set(names_)) != len(names_) or set(names_) != set(policies):
        missing = sorted(set(policies) - set(names_))
        extra = sorted(set(names_) - set(policies))
        detail = "give every policy's name exactly once"
        if missing:
            detail += f"; missing {', '.join(missing)}"
        if extra:
            detail += f"; unknown {', '.join(extra)}"
        raise _invalid(detail, field)
    return [policies[n] for n in names_]


def _out(
    policy: BirthrightPolicy, grants: dict[str, int], exceptions: dict[str, list[ExceptionOut]] | None = None
) -> PolicyOut:
    return PolicyOut(
        exceptions=(exceptions or {}).get(policy.name, []),
        name=policy.name,
        position=policy.position,
        groups=list(policy.groups),
        roles=list(policy.roles),
        description=policy.description,
        grants=grants.get(policy.name, 0),
    )


def _grant_counts(session: Session) -> dict[str, int]:
    rows = session.exec(  # type: ignore[call-overload]
        select(Grant.policy, func.count())
        .where(Grant.path == GrantPath.BIRTHRIGHT, col(Grant.active).is_(True))
        .group_by(Grant.policy)
    ).all()
    return {name: int(count) for name, count in rows if name}


def _renumber(session: Session, policies: list[BirthrightPolicy]) -> None:
    for position, policy in enumerate(policies):
        policy.position = position
        session.add(policy)


async def _trigger(client: Client, settings: Settings) -> bool:
    """Start the sync now through its schedule (one run at a time, at most one waiting); False if unreachable."""
    try:
        await trigger_now(client, settings, names.BIRTHRIGHT_SYNC)
    except RPCError as error:
        # The change is saved; the daily run applies it if Temporal stays out of reach.
        log.warning("could not start the birthright sync: %s", error.message)
        return False
    return True


def _audit(session: Session, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
    append_audit(session, [AuditEntry(actor=actor, action=action, target=target, details=details)])


# --- the policies -------------------------------------------------------------------------


def list_policies(settings: Settings, admin: User) -> list[PolicyOut]:
    """The policies in order: a role two policies grant is attributed to the first."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        grants, exceptions = _grant_counts(session), exceptions_by_policy(session)
        return [_out(p, grants, exceptions) for p in _ordered(session)]


def get_policy(settings: Settings, admin: User, name: str) -> PolicyOut:
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        return _out(_find(session, name), _grant_counts(session), exceptions_by_policy(session, name))


async def create_policy(client: Client, settings: Settings, admin: User, new: PolicyIn) -> PolicyOut:
    """Add a policy (last, or at ``position``); the sync applies it at once."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        if session.exec(select(BirthrightPolicy).where(BirthrightPolicy.name == new.name)).first() is not None:
            raise Refusal(RefusalKind.CONFLICT, f"a birthright policy named {new.name!r} already exists", field="name")
        _check(session, new.groups, new.roles)
        ordered = _ordered(session)
        policy = BirthrightPolicy(
            name=new.name, position=len(ordered), description=new.description, groups=new.groups, roles=new.roles
        )
        position = len(ordered) if new.position is None else min(new.position, len(ordered))
        ordered.insert(position, policy)
        _renumber(session, ordered)
        session.flush()
        details = new.model_dump(mode="json", exclude={"name"}) | {"position": position}
        _audit(session, admin.email, "birthright_policy.created", new.name, details)
        out = _out(policy, {})
    await _trigger(client, settings)
    return out


async def update_policy(client: Client, settings: Settings, admin: User, name: str, update: PolicyUpdate) -> PolicyOut:
    """Change a policy's groups, roles or description; the sync applies it at once."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        policy = _find(session, name)
        _check(session, update.groups, update.roles)
        changes = update.model_dump(mode="json", exclude_none=True)
        before = {key: getattr(policy, key) for key in changes}
        for key, value in changes.items():
            setattr(policy, key, value)
        session.add(policy)
        _audit(session, admin.email, "birthright_policy.updated", name, {"before": before, "after": changes})
        out = _out(policy, _grant_counts(session))
    await _trigger(client, settings)
    return out


async def delete_policy(client: Client, settings: Settings, admin: User, name: str) -> None:
    """Delete a policy; the sync removes the grants no other policy accounts for, at once."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        policy = _find(session, name)
        details = {"groups": policy.groups, "roles": policy.roles, "position": policy.position}
        session.delete(policy)
        session.flush()
        _renumber(session, _ordered(session))
        _audit(session, admin.email, "birthright_policy.deleted", name, details)
    await _trigger(client, settings)


async def reorder_policies(client: Client, settings: Settings, admin: User, order: list[str]) -> list[PolicyOut]:
    """Put the policies in this order (every name exactly once): it decides which policy a grant is under."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        before = [p.name for p in _ordered(session)]
        ordered = _check_order(session, order, field="names")
        _renumber(session, ordered)
        _audit(session, admin.email, "birthright_policy.reordered", LOCK, {"before": before, "after": order})
        grants = _grant_counts(session)
        out = [_out(p, grants) for p in ordered]
    await _trigger(client, settings)
    return out


def preview(settings: Settings, admin: User, change: Change, *, limit: int) -> PreviewOut:
    """The plan a change would cause, before saving it: the sync's own plan on the changed policies."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        specs = [PolicySpec(p.name, list(p.groups), list(p.roles)) for p in _ordered(session)]
        if isinstance(change, CreateChange):
            new = change.policy
            if any(s.name == new.name for s in specs):
                message = f"a birthright policy named {new.name!r} already exists"
                raise Refusal(RefusalKind.CONFLICT, message, field="policy.name")
            _check(session, new.groups, new.roles, prefix="policy.")
            position = len(specs) if new.position is None else min(new.position, len(specs))
            specs.insert(position, PolicySpec(new.name, new.groups, new.roles))
        elif isinstance(change, UpdateChange):
            old = _find(session, change.name)
            _check(session, change.changes.groups, change.changes.roles, prefix="changes.")
            changed = PolicySpec(old.name, change.changes.groups or old.groups, change.changes.roles or old.roles)
            specs = [changed if s.name == change.name else s for s in specs]
        elif isinstance(change, DeleteChange):
            _find(session, change.name)
            specs = [s for s in specs if s.name != change.name]
        else:
            by_name = {s.name: s for s in specs}
            specs = [by_name[p.name] for p in _check_order(session, change.names, field="names")]
        inputs = catalog.birthright_inputs(session, also={group for spec in specs for group in spec.groups})
    return _preview(inputs.plan(specs), limit, inputs.excepted(specs))


def _preview(plan: BirthrightPlan, limit: int, excepted: list[PlanItem]) -> PreviewOut:
    return PreviewOut(
        excepted=[PreviewItem(user=i.user, role=i.role, policy=i.policy) for i in excepted[:limit]],
        gains=[PreviewItem(user=i.user, role=i.role, policy=i.policy) for i in plan.add[:limit]],
        losses=[PreviewItem(user=i.user, role=i.role, policy=i.policy) for i in plan.remove[:limit]],
        relabels=[PreviewItem(user=r.user, role=r.role, policy=r.policy) for r in plan.relabel[:limit]],
        counts=plan.summary(),
        truncated=max(len(plan.add), len(plan.remove), len(plan.relabel)) > limit,
    )


# --- the sync -----------------------------------------------------------------------------


async def sync_now(client: Client, settings: Settings, admin: User) -> dict[str, str]:
    """Run the birthright sync now (one run at a time, at most one more waiting), and audit who asked."""
    require_admin(admin)
    if not await _trigger(client, settings):
        raise Refusal(
            RefusalKind.UNAVAILABLE,
            "the workflow service is unavailable: the birthright sync was not started, try again",
        )
    with session_scope(settings.db_url) as session:
        _audit(session, admin.email, "birthright_sync.triggered", names.BIRTHRIGHT_SYNC, {})
    return {"status": "triggered", "schedule": names.BIRTHRIGHT_SYNC}


def last_sync(settings: Settings, admin: User) -> SyncStateOut:
    """The last run: when it started and finished, what it planned and did, and why it failed if it did."""
    require_admin(admin)
    return sync_state(settings, names.BIRTHRIGHT_SYNC)


async def next_sync(client: Client, settings: Settings, admin: User) -> datetime | None:
    """When the birthright sync's schedule runs next; None if paused, missing or Temporal is out of reach."""
    require_admin(admin)
    return await next_run(client, names.BIRTHRIGHT_SYNC)

"""The catalog: the roles a caller can request, for how long, and whose approval each takes."""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel import col, select

from access.durations import Duration
from access.policy import RuleOption, describe_options
from access.types import BreakGlass
from activities.oncall import on_call_context
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import Role, User


class CatalogEntry(BaseModel):
    role: str
    """``integration/resource/role``: what to put in a request."""
    description: str
    sensitivity: str
    approval_workflow: str
    reauthenticate_within: Duration | None = None
    """Approving, extending or revoking under its workflow needs a sign-in at most this old (None: any)."""
    options: list[RuleOption]
    """The rules that apply to you, in order: up to how long, and whose approval it takes."""
    break_glass: BreakGlass | None = None
    """Its emergency access, when it allows it: ask with ``emergency: true`` to be granted at once, up to its
    ``max_duration``, and reviewed afterwards."""


def list_catalog(settings: Settings, user: User) -> list[CatalogEntry]:
    """Every role present in its target whose approval workflow has a rule that applies to ``user``."""
    entries: list[CatalogEntry] = []
    with session_scope(settings.db_url, write=False) as session:
        for role in session.exec(select(Role).where(col(Role.missing).is_(False)).order_by(Role.path)):
            policy = catalog.policy_for(session, role)
            if policy is None:
                continue
            context = on_call_context(settings, catalog.policy_context(session, user, role, policy), policy)
            options = describe_options(policy, context)
            if options:
                entries.append(
                    CatalogEntry(
                        role=role.path,
                        description=role.description,
                        sensitivity=role.sensitivity,
                        approval_workflow=policy.name,
                        reauthenticate_within=policy.reauthenticate_within,
                        options=options,
                        break_glass=BreakGlass.model_validate(role.break_glass) if role.break_glass else None,
                    )
                )
    return entries

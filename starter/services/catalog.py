"""The catalog: the roles a caller can request, for how long, and whose approval each takes."""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel import col, select

from access.durations import Duration
from access.policy import RuleOption, describe_options
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


def list_catalog(settings: Settings, user: User) -> list[CatalogEntry]:
    """Every role present in its target whose approval workflow has a rule that applies to ``user``."""
    entries: list[CatalogEntry] = []
    with session_scope(settings.db_url, write=False) as session:
        for role in session.exec(select(Role).where(col(Role.missing).is_(False)).order_by(Role.path)):
            policy = catalog.policy_for(session, role)
            if policy is None:
                continue
            options = describe_options(policy, catalog.policy_context(session, user, role, policy))
            if options:
                entries.append(
                    CatalogEntry(
                        role=role.path,
                        description=role.description,
                        sensitivity=role.sensitivity,
                        approval_workflow=policy.name,
                        reauthenticate_within=policy.reauthenticate_within,
                        options=options,
                    )
                )
    return entries

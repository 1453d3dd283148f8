"""Open references: names in birthright policies that wait for a directory's or integration's first run,
listed while they wait, and reported (and audited) if that run leaves them unresolved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from sqlmodel import Session, col, select

from access.types import AuditEntry
from store import groups as group_refs
from store.db import lock
from store.org_check import BIRTHRIGHT_LOCK, ConnectorCheck, OpenReference, synced_sources
from store.tables import BirthrightPolicy, Integration, Role


def open_references(session: Session, *, connectors: ConnectorCheck | None = None) -> list[OpenReference]:
    """The stored birthright policies' references that name nothing now: groups no source has (or several
    have) and roles not in the catalog or gone from their target. Such a reference grants nothing.

    Each says what it waits for (``waits_for``): the first sync of the directory it names, or the first
    discovery of its integration (one ``connectors`` says discovers; without ``connectors``, any); a
    reference nothing is to bring is *unresolved* (``waits_for`` None)."""
    policies = session.exec(select(BirthrightPolicy).order_by(col(BirthrightPolicy.position))).all()
    refs = {ref for policy in policies for ref in policy.groups}
    rows = group_refs.candidates(session, refs)
    problems = {ref: why for ref in refs if (why := group_refs.resolve_one(ref, rows, show=str).problem)}
    paths = {path for policy in policies for path in policy.roles}
    roles = {role.path: role for role in session.exec(select(Role).where(col(Role.path).in_(sorted(paths))))}
    integrations = {i.name: i for i in session.exec(select(Integration))}
    synced = synced_sources(session)
    found: list[OpenReference] = []
    for policy in policies:
        for ref in policy.groups:
            if ref in problems:
                found.append(_group_reference(policy.name, ref, problems[ref], integrations, synced))
        for path in policy.roles:
            role = roles.get(path)
            if role is None or role.missing:
                found.append(_role_reference(policy.name, path, role, integrations, connectors))
    return found


def _group_reference(
    policy: str, ref: str, why: str, integrations: Mapping[str, Integration], synced: set[str]
) -> OpenReference:
    source = group_refs.parse(ref).source
    directory = integrations.get(source or "")
    if not why.startswith("unknown group") or directory is None or not directory.directory:
        return OpenReference(policy, "group", ref, why)
    if source not in synced:
        return OpenReference(policy, "group", ref, f"{why}: waits for the first directory sync of {source}", source)
    return OpenReference(policy, "group", ref, f"{why}: {source} has synced and has no such group; fix the policy")


def _role_reference(
    policy: str,
    path: str,
    role: Role | None,
    integrations: Mapping[str, Integration],
    connectors: ConnectorCheck | None,
) -> OpenReference:
    if role is not None:
        return OpenReference(policy, "role", path, f"role {path} is missing from its target")
    name = path.split("/", 1)[0]
    integration = integrations.get(name)
    why = f"unknown role {path}"
    if integration is None:
        return OpenReference(policy, "role", path, why)
    if integration.discovered_at is not None:
        why = f"{why}: {name} has been discovered and has no such role; fix the policy"
        return OpenReference(policy, "role", path, why)
    if _discovers(integration, connectors):
        return OpenReference(policy, "role", path, f"{why}: waits for the first discovery of {name}", name)
    return OpenReference(policy, "role", path, why)


def _discovers(integration: Integration, connectors: ConnectorCheck | None) -> bool:
    if connectors is None:
        return True
    try:
        return connectors(integration.kind, integration.config).discovers
    except ValueError:
        return False


def awaiting_first_run(session: Session, kind: Literal["group", "role"], sources: Iterable[str]) -> list[OpenReference]:
    """The stored birthright references waiting for the first directory sync (``group``) or discovery
    (``role``) of ``sources``, read by that run before it changes anything; ``unresolved_after`` then says
    which it did not bring.

    Takes the birthright policies' lock, shared, until the transaction ends: an organisation file loaded
    meanwhile either is seen here or sees these sources as synced (and refuses an unknown reference to them).
    """
    lock(session, BIRTHRIGHT_LOCK, shared=True)
    wanted = set(sources)
    return [ref for ref in open_references(session) if ref.kind == kind and ref.waits_for in wanted]


def unresolved_after(session: Session, awaited: Sequence[OpenReference], run: str) -> AuditEntry | None:
    """The audit event naming those of ``awaited`` that still name nothing now that ``run`` (``the first
    directory sync of corp``) has finished, or None when it brought them all. Until a policy changes, they
    grant nothing, and ``open_references`` lists them as unresolved."""
    if not awaited:
        return None
    now = {reference.key: reference for reference in open_references(session)}
    still = [now[reference.key] for reference in awaited if reference.key in now]
    if not still:
        return None
    waited = sorted({reference.waits_for or "" for reference in awaited})
    return AuditEntry(
        actor="lapse",
        action="org.references_unresolved",
        target="org",
        reason=f"still naming nothing after {run} of {', '.join(waited)}: they grant nothing until the policy changes",
        details={
            "references": [
                {"policy": r.policy, "kind": r.kind, "reference": r.reference, "why": r.why} for r in still[:LISTED]
            ],
            "count": len(still),
        },
    )


LISTED = 1000
"""At most this many references named in one audit event (its ``count`` is exact)."""

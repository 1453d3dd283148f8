"""Group identity: a group is its source and its external id, never just its name.

Groups come from sources: the organisation file (source ``file``, keyed by name) and each directory
integration (source = the integration's name, keyed by the entry's ``entryUUID`` / ``objectGUID``, else
its DN). Two sources may each have a group called ``security``; they are different groups, and
membership of one never counts as membership of the other.

Policies (approval conditions and approvers, birthright policies) name groups by **reference**:

- ``security`` — the organisation file's group ``security``; only when the file has no group of that
  name, the one directory group so called (several, in one source or across sources: ambiguous);
- ``corp:security`` — the group called ``security`` in source ``corp`` (``file:security`` is the file's);
  ambiguous when that source has several groups of that name (same ``cn`` in two OUs);
- ``corp:#<external id>`` — the group of source ``corp`` with that external id (an LDAP entryUUID,
  objectGUID or DN): always unambiguous.

A reference that is unknown or ambiguous is refused when a policy is loaded or saved (``problems``);
at decision time it matches nobody (``resolve``), so a group created later can never be merged in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from store.tables import Group

log = logging.getLogger(__name__)

FILE = "file"
"""The organisation file's source."""


@dataclass(frozen=True)
class GroupRef:
    """A parsed reference: ``source`` is None for a bare name."""

    source: str | None
    name: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class GroupRow:
    """What identifies a group: its source, external id and display name."""

    id: int
    source: str
    name: str
    external_id: str | None


def parse(ref: str) -> GroupRef:
    """``name``, ``source:name`` or ``source:#external id`` (integration names hold no ``:``)."""
    text = ref.strip()
    source, sep, rest = text.partition(":")
    if not sep:
        return GroupRef(source=None, name=text)
    if rest.startswith("#"):
        return GroupRef(source=source, external_id=rest[1:])
    return GroupRef(source=source, name=rest)


def display(source: str, name: str) -> str:
    """How a group is shown and the shortest reference that names it by name: the file's bare,
    a directory's qualified with its source."""
    return name if source == FILE else f"{source}:{name}"


def exact(row: GroupRow) -> str:
    """The reference that names this group whatever groups are created later."""
    return row.name if row.source == FILE else f"{row.source}:#{row.external_id}"


@dataclass(frozen=True)
class Resolution:
    """What a reference names: one group, or why it names none."""

    group: GroupRow | None
    problem: str | None = None


def _matches(ref: GroupRef, row: GroupRow) -> bool:
    if ref.source is not None and row.source != ref.source:
        return False
    if ref.external_id is not None:
        # File groups are keyed by name (rows from before migration 0007 may have no external id).
        return row.external_id == ref.external_id or (row.source == FILE and row.name == ref.external_id)
    return row.name == ref.name


def resolve_one(text: str, rows: Iterable[GroupRow], *, show: Callable[[str], str] = repr) -> Resolution:
    """Resolve one reference against ``rows`` (pure: the candidates are read by the caller); ``show``
    formats the reference in the problem."""
    ref = parse(text)
    if ref.source == "" or not (ref.name or ref.external_id):
        return Resolution(None, f"{show(text)} is not a group reference (name, source:name or source:#external-id)")
    found = [row for row in rows if _matches(ref, row)]
    if ref.source is None:
        in_file = [row for row in found if row.source == FILE]
        found = in_file or found
    if len(found) == 1:
        return Resolution(found[0])
    if not found:
        return Resolution(None, f"unknown group {show(text)}")
    listed = ", ".join(sorted(exact(row) for row in found))
    if ref.source is None:
        why = f"group {show(text)} is ambiguous: the organisation file has no group of that name and several sources do"
    else:
        why = f"group {show(text)} is ambiguous: {ref.source} has {len(found)} groups of that name"
    return Resolution(None, f"{why} ({listed}); name one by source and external id")


def candidates(session: Session, refs: Iterable[str]) -> list[GroupRow]:
    """The groups any of ``refs`` could name, in one query."""
    keys = {parse(ref) for ref in refs}
    names = {key.name for key in keys if key.name}
    ids = {key.external_id for key in keys if key.external_id}
    if not names and not ids:
        return []
    query = sa_select(col(Group.id), col(Group.source), col(Group.name), col(Group.external_id)).where(
        or_(col(Group.name).in_(sorted(names | ids)), col(Group.external_id).in_(sorted(ids)))
    )
    return [GroupRow(id=i, source=s, name=n, external_id=e) for i, s, n, e in session.execute(query)]


def resolutions(session: Session, refs: Iterable[str]) -> dict[str, Resolution]:
    wanted = sorted(set(refs))
    rows = candidates(session, wanted)
    return {ref: resolve_one(ref, rows) for ref in wanted}


def resolve(session: Session, refs: Iterable[str]) -> dict[str, int]:
    """Group ids of the references that name exactly one group; the others name nobody (and are logged)."""
    found: dict[str, int] = {}
    for ref, resolution in resolutions(session, refs).items():
        if resolution.group is not None:
            found[ref] = resolution.group.id
        else:
            log.warning("group reference matches nobody: %s", resolution.problem)
    return found


def problems(session: Session, refs: Iterable[str]) -> dict[str, str]:
    """For each reference that does not name exactly one group, why (for a 4xx or a load error)."""
    return {
        ref: resolution.problem or ""
        for ref, resolution in resolutions(session, refs).items()
        if resolution.group is None
    }


def members_by_ref(
    refs: Iterable[str], ids: Mapping[str, int], members_of: Mapping[int, set[str]]
) -> dict[str, set[str]]:
    """Each reference's members, from members by group id (an unresolved reference has none)."""
    return {ref: set(members_of.get(ids[ref], set())) if ref in ids else set() for ref in refs}

"""Review campaign definitions in the app DB: checking what one names against the catalog and the directory,
and storing it, for the reviews API and the organisation file's ``reviews:`` alike.

A definition names integrations, resources, roles, groups and people; each must be one the app DB knows (a role
of an integration never discovered yet may still be named: discovery brings it). The bounds every string and
list keeps are the API's (``access.limits``): a definition is copied into each campaign it starts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from access.limits import MAX_ITEMS, MAX_ROLE_PATH, MAX_TEXT, control_characters
from access.reviews import ReviewDefinition
from access.types import Approver, ApproverKind
from store import groups as group_refs
from store.tables import Integration, Resource, ReviewDefinitionRow, Role, User

Problem = tuple[str, str]
"""``(field, message)``: the field a dotted path into the definition (``scope.roles``)."""


def _bounds(value: Any, path: str, problems: list[Problem]) -> None:
    """Every list at most ``MAX_ITEMS`` long, every string bounded and free of control characters."""
    if isinstance(value, str):
        free = path.endswith("description")  # free text: tabs and newlines allowed
        limit = MAX_TEXT if free else MAX_ROLE_PATH
        bad = control_characters(value) + ([] if free else [f"U+{ord(c):04X}" for c in "\t\n" if c in value])
        if len(value) > limit:
            problems.append((path, f"{path} is {len(value)} characters long; at most {limit} are allowed"))
        elif bad:
            problems.append((path, f"{path} contains control characters ({', '.join(bad[:5])}); remove them"))
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            problems.append((path, f"{path} lists {len(value)} entries; at most {MAX_ITEMS} are allowed"))
            return
        for i, item in enumerate(value):
            _bounds(item, f"{path}.{i}", problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            _bounds(item, f"{path}.{key}" if path else str(key), problems)


def _user_exists(session: Session, email: str) -> bool:
    return session.exec(select(User.id).where(User.email == email)).first() is not None


def _approver_problems(session: Session, approvers: list[Approver], field: str) -> list[Problem]:
    problems: list[Problem] = []
    groups = [a.name for a in approvers if a.kind is ApproverKind.GROUP and a.name]
    wrong = group_refs.problems(session, groups)
    for i, approver in enumerate(approvers):
        where = f"{field}.{i}.name"
        if approver.kind is ApproverKind.GROUP and approver.name in wrong:
            problems.append((where, wrong[approver.name]))
        known = approver.kind is not ApproverKind.USER or not approver.name or _user_exists(session, approver.name)
        if not known:
            problems.append((where, f"there is no user {approver.name!r}"))
    return problems


def definition_problems(session: Session, definition: ReviewDefinition) -> list[Problem]:
    """What is wrong with ``definition`` against the app DB: names nothing, or is out of bounds. Empty: fine."""
    problems: list[Problem] = []
    _bounds(definition.model_dump(mode="json"), "", problems)
    if problems:
        return problems
    scope = definition.scope
    integrations = {
        i.name: i for i in session.exec(select(Integration).where(col(Integration.name).in_(scope.integrations)))
    }
    for name in scope.integrations:
        if name not in integrations:
            problems.append(("scope.integrations", f"there is no integration {name!r}"))
    named = {path.split("/", 1)[0] for path in [*scope.resources, *scope.roles]}
    known_integrations = set(session.exec(select(Integration.name).where(col(Integration.name).in_(sorted(named)))))
    resources = {
        f"{integration}/{resource}"
        for integration, resource in session.exec(
            select(Integration.name, Resource.name).join(Resource, col(Resource.integration_id) == Integration.id)
        )
    }
    # An integration neither discovered nor declaring any resource yet: its first discovery brings its roles.
    undiscovered = {
        i.name
        for i in session.exec(select(Integration).where(col(Integration.name).in_(sorted(named))))
        if i.discovered_at is None and not any(r.startswith(f"{i.name}/") for r in resources)
    }
    roles = set(session.exec(select(Role.path).where(col(Role.path).in_(scope.roles))))
    for field, paths, parts, known in (
        ("scope.resources", scope.resources, 2, resources),
        ("scope.roles", scope.roles, 3, roles),
    ):
        for path in paths:
            split = path.split("/")
            if len(split) != parts or not all(split):
                shape = "integration/resource" if parts == 2 else "integration/resource/role"
                problems.append((field, f"{path!r} is not {shape}"))
            elif split[0] not in known_integrations:
                problems.append((field, f"{path!r}: there is no integration {split[0]!r}"))
            elif path not in known and split[0] not in undiscovered:
                problems.append((field, f"there is no {'resource' if parts == 2 else 'role'} {path!r}"))
    if scope.group is not None and (wrong := group_refs.problems(session, [scope.group])):
        problems.append(("scope.group", wrong[scope.group]))
    if scope.manager is not None and not _user_exists(session, scope.manager.strip().lower()):
        manager = scope.manager.strip().lower()
        problems.append(("scope.manager", f"there is no user {manager!r}"))
    problems += _approver_problems(session, definition.reviewers, "reviewers")
    problems += _approver_problems(session, definition.fallback, "fallback")
    return problems


def find_definition(session: Session, name: str) -> ReviewDefinitionRow | None:
    return session.exec(select(ReviewDefinitionRow).where(ReviewDefinitionRow.name == name)).first()


def definition_of(row: ReviewDefinitionRow) -> ReviewDefinition:
    return ReviewDefinition.model_validate(row.body)


def save_definition(session: Session, definition: ReviewDefinition, *, source: str, by: str) -> str | None:
    """Store ``definition`` (matched by name), in the caller's transaction: ``created``, ``updated`` or None
    (it was stored exactly so already). Check it first (``definition_problems``)."""
    body = definition.model_dump(mode="json")
    row = find_definition(session, definition.name)
    if row is not None and row.body == body and row.source == source:
        return None
    change = "created" if row is None else "updated"
    row = row or ReviewDefinitionRow(name=definition.name, updated_at=datetime.now(UTC))
    row.body, row.source, row.updated_by, row.updated_at = body, source, by, datetime.now(UTC)
    session.add(row)
    session.flush()
    return change

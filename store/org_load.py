"""Loading a checked organisation file into the app DB: users, groups, integrations, workflows, birthright
policies, review definitions, in one transaction, and what the load changed (for its audit event)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert
from sqlmodel import Session, col, delete, select

from store import groups as group_refs
from store import notifications as outbox
from store.credentials_end import end_credentials
from store.db import lock
from store.org import BirthrightPolicyEntry, OrgError, OrgFile, T, UserEntry
from store.org_check import BIRTHRIGHT_LOCK, ConnectorCheck, Known, OpenReference, OrgProblem
from store.review_definitions import definition_problems, save_definition
from store.tables import (
    ApprovalAssignment,
    ApprovalWorkflow,
    BirthrightPolicy,
    Group,
    Integration,
    Membership,
    Resource,
    Role,
    RoleOwner,
    User,
)


@dataclass
class Changed:
    """What one section of a file changed: names (emails, paths) created and updated; unchanged entries are
    left out. ``listed`` caps each list an audit event names, with what is left counted."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def record(self, name: str, change: str | None) -> None:
        if change == "created":
            self.created.append(name)
        elif change == "updated":
            self.updated.append(name)

    def listed(self) -> dict[str, list[str]]:
        return {kind: _listed(names) for kind, names in (("created", self.created), ("updated", self.updated)) if names}


@dataclass
class UserChanges:
    """What a file changed of its users: how many it created, and whom it made or unmade an admin,
    deactivated or reactivated, or put in other groups of the file's."""

    created: int = 0
    admins_added: list[str] = field(default_factory=list)
    admins_removed: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    groups_changed: list[str] = field(default_factory=list)

    def listed(self) -> dict[str, Any]:
        lists = {
            "admins_added": self.admins_added,
            "admins_removed": self.admins_removed,
            "deactivated": self.deactivated,
            "reactivated": self.reactivated,
            "groups_changed": self.groups_changed,
        }
        return ({"created": self.created} if self.created else {}) | {k: _listed(v) for k, v in lists.items() if v}


LISTED = 1000
"""At most this many names in one list of a load's audit event; the rest are counted."""


def _listed(names: list[str]) -> list[str]:
    return names if len(names) <= LISTED else [*names[:LISTED], f"… and {len(names) - LISTED} more"]


@dataclass
class Loaded:
    """What loading a file did: the references it left open, and what it created and updated per section."""

    opened: list[OpenReference]
    users: UserChanges = field(default_factory=UserChanges)
    groups: Changed = field(default_factory=Changed)
    integrations: Changed = field(default_factory=Changed)
    roles: Changed = field(default_factory=Changed)
    """By path; their resources come with them."""
    approval_workflows: Changed = field(default_factory=Changed)
    assignments: Changed = field(default_factory=Changed)
    """``scope → workflow``."""
    birthright_policies: Changed = field(default_factory=Changed)
    birthright_moved: list[str] = field(default_factory=list)
    """Policies the file does not name whose place in the order changed (they follow the file's)."""
    reviews: Changed = field(default_factory=Changed)
    sections: list[str] = field(default_factory=list)
    """The whole sections (``notifications``, ``on_call``) the file changed."""

    def changes(self) -> dict[str, Any]:
        """Per section, what was created and updated (the audit event's ``changes``); sections it left as they
        were are left out."""
        sections: dict[str, Any] = {
            "users": self.users.listed(),
            "groups": self.groups.listed(),
            "integrations": self.integrations.listed(),
            "roles": self.roles.listed(),
            "approval_workflows": self.approval_workflows.listed(),
            "assignments": self.assignments.listed(),
            "birthright_policies": self.birthright_policies.listed()
            | ({"moved": self.birthright_moved} if self.birthright_moved else {}),
            "reviews": self.reviews.listed(),
            **{name: {"updated": True} for name in self.sections},
        }
        return {name: changed for name, changed in sections.items() if changed}


def _upsert(
    session: Session, model: type[T], where: dict[str, object], values: dict[str, object]
) -> tuple[T, str | None]:
    """The row ``where`` names, created or updated with ``values``; and ``created``, ``updated`` or None."""
    query = select(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    row = session.exec(query).first()
    change: str | None
    if row is None:
        row, change = model(**where, **values), "created"
    else:
        change = "updated" if any(getattr(row, key) != value for key, value in values.items()) else None
        for key, value in values.items():
            setattr(row, key, value)
    session.add(row)
    session.flush()
    return row, change


def _one(session: Session, model: type[T], **where: object) -> T:
    query = select(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    return session.exec(query).one()


def _scope(session: Session, path: str) -> tuple[int, int | None, int | None]:
    """``integration[/resource[/role]]`` → the ids an assignment stores."""
    parts = path.split("/")
    integration = _one(session, Integration, name=parts[0])
    if len(parts) == 1:
        return integration.id or 0, None, None
    resource = _one(session, Resource, integration_id=integration.id, name=parts[1])
    if len(parts) == 2:
        return integration.id or 0, resource.id, None
    return integration.id or 0, resource.id, _one(session, Role, path=path).id


CHUNK = 500
"""Values per ``IN (...)`` query."""


def _chunks(values: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


SectionCheck = Callable[[str, Mapping[str, Any]], dict[str, Any]]
"""Checks a whole section (``notifications``, ``on_call``) and returns it as stored, or raises ``ValueError``
(pydantic's ValidationError is one) naming what is wrong. ``starter.services.org.checked_section`` is Lapse's."""

SECTIONS = ("notifications", "on_call")


def load_org(
    session: Session, org: OrgFile, *, connectors: ConnectorCheck, sections: SectionCheck | None = None
) -> list[OpenReference]:
    """Check the organisation file whole, then write it into the app DB, in the caller's transaction.

    The file may refer to users, groups, workflows and scopes already in the DB. Returns the birthright
    references left open until a first directory sync or discovery (see ``OrgFile.check``); ``load`` says
    what it changed too.
    """
    return load(session, org, connectors=connectors, sections=sections).opened


def load(session: Session, org: OrgFile, *, connectors: ConnectorCheck, sections: SectionCheck | None = None) -> Loaded:
    """``load_org``, saying what it created and updated per section.

    Holds the birthright policies' lock, as every change of them does (loading renumbers them), from before
    the file is checked until the caller's transaction ends.
    """
    lock(session, BIRTHRIGHT_LOCK)
    loaded = Loaded(opened=org.check(Known.read(session), connectors=connectors))
    for g in org.groups:
        _, change = _upsert(
            session,
            Group,
            {"source": group_refs.FILE, "name": g.name},
            {"description": g.description, "external_id": g.name},
        )
        loaded.groups.record(g.name, change)
    _load_users(session, org.users, loaded.users)
    for integ in org.integrations:
        integration, change = _upsert(
            session,
            Integration,
            {"name": integ.name},
            {
                "kind": integ.kind,
                "description": integ.description,
                "config": integ.config,
                "discovery_interval_s": int(integ.discovery.every.total_seconds()),
                "enforce_jit_only": integ.discovery.enforce_jit_only,
                "directory": integ.directory,
            },
        )
        loaded.integrations.record(integ.name, change)
        for res in integ.resources:
            where: dict[str, object] = {"integration_id": integration.id, "name": res.name}
            resource, _ = _upsert(session, Resource, where, {"description": res.description})
            for role_entry in res.roles:
                path = f"{integ.name}/{res.name}/{role_entry.name}"
                role, change = _upsert(
                    session,
                    Role,
                    {"resource_id": resource.id, "name": role_entry.name},
                    {
                        "path": path,
                        "description": role_entry.description,
                        "sensitivity": role_entry.sensitivity.value,
                        "jit_only": role_entry.jit_only,
                        "break_glass": (
                            role_entry.break_glass.model_dump(mode="json") if role_entry.break_glass else None
                        ),
                    },
                )
                owners = sorted({owner.lower() for owner in role_entry.owners})
                before = sorted(
                    session.exec(
                        select(User.email)
                        .join(RoleOwner, col(RoleOwner.user_id) == User.id)
                        .where(RoleOwner.role_id == role.id)
                    )
                )
                if owners != before:
                    change = change or "updated"
                    session.exec(delete(RoleOwner).where(col(RoleOwner.role_id) == role.id))
                    for owner in owners:
                        owner_id = _one(session, User, email=owner).id
                        session.add(RoleOwner(role_id=role.id, user_id=owner_id))  # type: ignore[arg-type]
                loaded.roles.record(path, change)
    for w in org.approval_workflows:
        _, change = _upsert(
            session,
            ApprovalWorkflow,
            {"name": w.name},
            {
                "description": w.description,
                "rules": [r.model_dump(mode="json") for r in w.rules],
                "reauthenticate_seconds": (
                    int(w.reauthenticate_within.total_seconds()) if w.reauthenticate_within is not None else None
                ),
            },
        )
        loaded.approval_workflows.record(w.name, change)
    for assignment in org.assignments:
        integration_id, resource_id, role_id = _scope(session, assignment.scope)
        _, change = _upsert(
            session,
            ApprovalAssignment,
            {"integration_id": integration_id, "resource_id": resource_id, "role_id": role_id},
            {"approval_workflow_id": _one(session, ApprovalWorkflow, name=assignment.workflow).id},
        )
        loaded.assignments.record(f"{assignment.scope} → {assignment.workflow}", change)
    if org.birthright_policies:
        # A bare group name left open is stored qualified with the directory it waits for (``OpenReference``).
        qualified = {(o.policy, o.given): o.reference for o in loaded.opened if o.given is not None}
        _load_birthright(session, org.birthright_policies, qualified, loaded)
    session.flush()
    _load_reviews(session, org, loaded)
    _load_sections(session, org, sections, loaded)
    return loaded


def _load_sections(session: Session, org: OrgFile, check: SectionCheck | None, loaded: Loaded) -> None:
    """The file's whole sections (``notifications``, ``on_call``), checked by ``check`` when given (else only
    as JSON objects: their readers check them again and ignore one they cannot read)."""
    problems: list[OrgProblem] = []
    bodies: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        body = getattr(org, name)
        if body is None:
            continue
        try:
            bodies[name] = check(name, body) if check is not None else dict(body)
        except ValidationError as error:  # its locations and messages only: an input may be a pasted secret
            problems += [
                OrgProblem(
                    ".".join([name, *(str(part) for part in e["loc"])]),
                    f"{'.'.join([name, *(str(part) for part in e['loc'])])}: {e['msg']}",
                )
                for e in error.errors(include_input=False)
            ]
        except ValueError as error:
            problems.append(OrgProblem(name, f"{name}: {error}"))
    if problems:
        raise OrgError(problems)
    for name, body in bodies.items():
        if outbox.save_section(session, name, body, "org-file", now=datetime.now(UTC)):
            loaded.sections.append(name)


def _load_reviews(session: Session, org: OrgFile, loaded: Loaded) -> None:
    """The file's review definitions, checked against what the app DB now holds (the file's own users, groups
    and roles included); a problem refuses the whole file, as any other does (the caller's transaction)."""
    problems = [
        OrgProblem(f"reviews.{i}.{where}".rstrip("."), f"reviews.{i} ({definition.name}): {message}")
        for i, definition in enumerate(org.reviews)
        for where, message in definition_problems(session, definition)
    ]
    if problems:
        raise OrgError(problems)
    for definition in org.reviews:
        loaded.reviews.record(definition.name, save_definition(session, definition, source="file", by="org-file"))


def _load_users(session: Session, entries: list[UserEntry], changes: UserChanges) -> None:
    """Create or update the users, and set their memberships of the file's groups, with a few queries per
    ``CHUNK`` users (the file's largest section); a user listed twice is as the last entry says."""
    last = {entry.email: entry for entry in entries}
    emails = list(last)
    users: dict[str, User] = {}
    for some in _chunks(emails):
        users |= {user.email: user for user in session.exec(select(User).where(col(User.email).in_(some)))}
    for email, entry in last.items():
        user = users.get(email)
        if user is None:
            user = users[email] = User(email=email)
            changes.created += 1
            if entry.admin:
                changes.admins_added.append(email)
        else:
            if user.is_admin != entry.admin:
                (changes.admins_added if entry.admin else changes.admins_removed).append(email)
            if user.active != entry.active:
                (changes.reactivated if entry.active else changes.deactivated).append(email)
        user.name = entry.name
        user.manager_email = entry.manager
        user.department = (entry.department or "").strip() or None
        user.active = entry.active
        user.is_admin = entry.admin
        session.add(user)
    session.flush()
    # Someone the file deactivates loses their tokens and sessions for good (reactivating brings neither back).
    end_credentials(session, dict.fromkeys(changes.deactivated, "deactivated by the organisation file"), actor="lapse")
    # Only the file's own groups: a directory's memberships are the directory's to decide.
    group_ids = {
        name: group_id
        for name, group_id in session.exec(select(Group.name, Group.id).where(Group.source == group_refs.FILE))
        if group_id is not None
    }
    ids = [users[email].id or 0 for email in emails]
    held: dict[int, set[int]] = {user_id: set() for user_id in ids}
    for chunk in _chunks(ids):
        for user_id, group_id in session.exec(
            select(Membership.user_id, Membership.group_id)
            .join(Group, col(Group.id) == Membership.group_id)
            .where(col(Membership.user_id).in_(chunk), Group.source == group_refs.FILE)
        ):
            held[user_id].add(group_id)
    added: list[dict[str, int]] = []
    for email, entry in last.items():
        user_id = users[email].id or 0
        wanted = {group_ids[name] for name in entry.groups}
        if wanted == held[user_id]:
            continue
        changes.groups_changed.append(email)
        if gone := held[user_id] - wanted:
            session.exec(
                delete(Membership).where(col(Membership.user_id) == user_id, col(Membership.group_id).in_(sorted(gone)))
            )
        added += [{"user_id": user_id, "group_id": group_id} for group_id in sorted(wanted - held[user_id])]
    for rows in _chunks(added):
        session.execute(insert(Membership), rows)


def _load_birthright(
    session: Session, entries: list[BirthrightPolicyEntry], qualified: dict[tuple[str, str], str], loaded: Loaded
) -> None:
    """The file's policies first, in its order; policies only the DB has keep their order after them."""
    named = {e.name for e in entries}
    others = session.exec(
        select(BirthrightPolicy)
        .where(col(BirthrightPolicy.name).not_in(named))
        .order_by(col(BirthrightPolicy.position), col(BirthrightPolicy.id))
    ).all()
    for position, entry in enumerate(entries):
        groups = list(dict.fromkeys(qualified.get((entry.name, group), group) for group in entry.groups))
        values = {"position": position, "groups": groups, "roles": entry.roles, "description": entry.description}
        _, change = _upsert(session, BirthrightPolicy, {"name": entry.name}, values)
        loaded.birthright_policies.record(entry.name, change)
    for position, policy in enumerate(others, start=len(entries)):
        if policy.position != position:
            loaded.birthright_moved.append(policy.name)
        policy.position = position
        session.add(policy)

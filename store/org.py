"""The organisation file: users, groups, integrations, approval workflows and their assignment, birthright policies.

The run command loads the bundled demo organisation on first start; admins load their own
through the API (``POST /api/org``, ``lapse load-org FILE``). Loading is idempotent: entries are
matched by name (email for users) and updated in place.

A file is checked whole before anything of it is stored (``store.org_check``): whoever loads one passes
``connectors``, which builds an integration's connector, since persistence imports no connector driver.

Every entry is bounded as the API bounds the same thing (names, paths, emails, free text, list lengths), and
so is every section (``LIMITS``): a file is stored in one transaction, which holds the app DB's write lock
(SQLite's whole database) for as long as it takes — about a millisecond per user.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import insert
from sqlmodel import Session, col, delete, select

from access.durations import Duration
from access.limits import MAX_EMAIL, MAX_ITEMS, MAX_NAME, MAX_ROLE_PATH, MAX_TEXT, control_characters
from access.types import ApprovalPolicy, Model, Rule, Sensitivity
from store import groups as group_refs
from store.db import lock
from store.org_check import BIRTHRIGHT_LOCK, ConnectorCheck, Known, OpenReference, OrgProblem, check_references
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

T = TypeVar("T")

DEMO_ORG = Path(__file__).parent / "demo_org.yaml"


LIMITS = {
    "users": 20_000,
    "groups": 5_000,
    "integrations": MAX_ITEMS,
    "approval_workflows": MAX_ITEMS,
    "assignments": 5_000,
    "birthright_policies": MAX_ITEMS,
}
"""The most entries a section of one file may list: a file is stored in one transaction, holding the app DB's
write lock meanwhile (about a millisecond per user), which must end well within the 30 s other writers wait."""
MAX_ROLES = 10_000
"""The most roles one file may declare, over all its integrations' resources."""

INTEGRATION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""An integration's name, as the integrations API takes it (``starter.services.integrations.NAME_PATTERN``)."""
POLICY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$"
"""A birthright policy's name, as the birthright API takes it (``starter.services.birthright.NAME_PATTERN``)."""


def _plain(value: str) -> str:
    """A name, a path or an email: no tab or newline either (the file's other control characters are refused
    whole, see ``OrgFile._printable``)."""
    if "\t" in value or "\n" in value:
        raise ValueError("contains a tab or a newline; remove it")
    return value


def _path_part(value: str) -> str:
    if not value.strip() or "/" in value:
        raise ValueError(f"{value!r}: a name cannot be empty or hold '/' (it separates the parts of a role path)")
    return value


# The API's bounded fields (``starter.services.fields``), which persistence cannot import: the same limits.
Name = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_plain)]
"""A name (a group, a workflow, a group reference, a connector kind): at most ``MAX_NAME`` characters."""
Email = Annotated[str, StringConstraints(max_length=MAX_EMAIL), AfterValidator(_plain)]
RolePath = Annotated[str, StringConstraints(max_length=MAX_ROLE_PATH), AfterValidator(_plain)]
"""``integration/resource/role`` (or a part of one, as an assignment's scope)."""
FreeText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
"""A description: at most ``MAX_TEXT`` characters, tabs and newlines allowed."""
PathPart = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_plain), AfterValidator(_path_part)]
"""A resource's or a role's name: one part of ``integration/resource/role``."""
IntegrationName = Annotated[
    str, Field(pattern=INTEGRATION_NAME_PATTERN, description="Lowercase letters, digits, `_`, `.`, `-`.")
]
PolicyName = Annotated[str, Field(pattern=POLICY_NAME_PATTERN, description="Letters, digits, spaces, `_`, `.`, `-`.")]


class OrgError(ValueError):
    """The organisation file is malformed or refers to something it does not define."""

    def __init__(self, problems: list[OrgProblem] | str) -> None:
        self.problems = [OrgProblem("", problems)] if isinstance(problems, str) else problems
        super().__init__("; ".join(problem.message for problem in self.problems))


class UserEntry(Model):
    email: Email
    name: Name = ""
    manager: Email | None = None
    admin: bool = False
    active: bool = True
    groups: list[Name] = Field(default=[], max_length=MAX_ITEMS)
    """The organisation file's own groups (``name`` or ``file:name``): a directory's are its to fill."""

    @field_validator("groups")
    @classmethod
    def _file_groups(cls, value: list[str]) -> list[str]:
        names = []
        for ref in value:
            parsed = group_refs.parse(ref)
            if parsed.source not in (None, group_refs.FILE) or not parsed.name:
                raise ValueError(f"{ref!r}: the organisation file puts users in its own groups only (by name)")
            names.append(parsed.name)
        return names

    @field_validator("email", "manager")
    @classmethod
    def _lower_email(cls, value: str | None) -> str | None:
        """Emails compare case-insensitively: kept in lower case from where they enter."""
        return value.strip().lower() if value is not None else None


class GroupEntry(Model):
    name: Name
    description: FreeText = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if ":" in value or not value.strip():
            raise ValueError(f"{value!r}: a group name cannot be empty or hold ':' (it separates a source)")
        return value.strip()


class RoleEntry(Model):
    name: PathPart
    description: FreeText = ""
    sensitivity: Sensitivity = Sensitivity.MEDIUM
    owners: list[Email] = Field(default=[], max_length=MAX_ITEMS)
    jit_only: bool = False
    """Only Lapse may grant it: discovery treats a grant made elsewhere as drift."""

    @field_validator("owners")
    @classmethod
    def _lower_emails(cls, value: list[str]) -> list[str]:
        return [owner.strip().lower() for owner in value]


class ResourceEntry(Model):
    name: PathPart
    description: FreeText = ""
    roles: list[RoleEntry] = Field(default=[], max_length=MAX_ITEMS)


class DiscoveryEntry(Model):
    every: Duration = timedelta(minutes=15)
    """How often the discovery schedule runs."""
    enforce_jit_only: bool = False
    """Revoke grants of JIT-only roles made outside Lapse."""


class IntegrationEntry(Model):
    name: IntegrationName
    kind: Name = "ledger"
    description: FreeText = ""
    config: dict[str, Any] = {}
    """Connector settings; secrets only as references (``dsn_env``, ``dsn_file``), never inline."""
    discovery: DiscoveryEntry = DiscoveryEntry()
    resources: list[ResourceEntry] = Field(default=[], max_length=MAX_ITEMS)
    directory: bool = False
    """Also the identity source: the directory sync reads users and groups from it (``ldap`` only)."""


class ApprovalWorkflowEntry(ApprovalPolicy):
    """An approval workflow, its names and lists bounded as the API bounds them."""

    name: Name
    description: FreeText = ""
    rules: list[Rule] = Field(min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _bounded_rules(self) -> ApprovalWorkflowEntry:
        for r, rule in enumerate(self.rules):
            texts = [(f"rules.{r}.name", rule.name, MAX_NAME)]
            lists = [(f"rules.{r}.steps", len(rule.steps))]
            for key, groups in (("groups", rule.when.groups), ("on_call", rule.when.on_call)):
                lists.append((f"rules.{r}.when.{key}", len(groups)))
                texts += [(f"rules.{r}.when.{key}.{g}", group, MAX_NAME) for g, group in enumerate(groups)]
            for s, step in enumerate(rule.steps):
                texts.append((f"rules.{r}.steps.{s}.name", step.name, MAX_NAME))
                lists.append((f"rules.{r}.steps.{s}.approvers", len(step.approvers)))
                for a, approver in enumerate(step.approvers):
                    texts.append((f"rules.{r}.steps.{s}.approvers.{a}.name", approver.name or "", MAX_EMAIL))
            for where, text, limit in texts:
                if len(text) > limit:
                    raise ValueError(f"{where} is {len(text)} characters long; at most {limit} are allowed")
                if "\t" in text or "\n" in text:
                    raise ValueError(f"{where} contains a tab or a newline; remove it")
            for where, n in lists:
                if n > MAX_ITEMS:
                    raise ValueError(f"{where} lists {n} entries; at most {MAX_ITEMS} are allowed")
        return self


class AssignmentEntry(Model):
    workflow: Name
    scope: RolePath
    """``integration``, ``integration/resource`` or ``integration/resource/role``."""


class BirthrightPolicyEntry(Model):
    name: PolicyName
    groups: list[Name] = Field(min_length=1, max_length=MAX_ITEMS)
    roles: list[RolePath] = Field(min_length=1, max_length=MAX_ITEMS)
    """Role paths ``integration/resource/role``."""
    description: FreeText = ""


class OrgFile(Model):
    users: list[UserEntry] = []
    groups: list[GroupEntry] = []
    integrations: list[IntegrationEntry] = []
    approval_workflows: list[ApprovalWorkflowEntry] = []
    assignments: list[AssignmentEntry] = []
    birthright_policies: list[BirthrightPolicyEntry] = []
    """In order: a role two policies grant is attributed to the first."""

    @field_validator(*LIMITS, mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        """A section longer than ``LIMITS`` allows is refused before any of its entries is read."""
        limit = LIMITS[info.field_name or ""]
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(
                f"lists {len(value)} {(info.field_name or '').replace('_', ' ')}; one file may list at most {limit}: "
                "split it into several files (each is loaded on top of what is stored)"
            )
        return value

    @model_validator(mode="after")
    def _bounded_roles(self) -> OrgFile:
        roles = sum(len(resource.roles) for integration in self.integrations for resource in integration.resources)
        if roles > MAX_ROLES:
            raise ValueError(
                f"integrations declare {roles} roles; one file may declare at most {MAX_ROLES}: split it into "
                "several files (each is loaded on top of what is stored)"
            )
        return self

    def sha256(self) -> str:
        """The SHA-256 of the file's canonical JSON (its content as read, keys sorted, no spaces): the same
        file gives the same digest whether it was sent as YAML or JSON, laid out however."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        """No control characters anywhere (tabs and newlines aside): the file's text ends up in the app DB,
        workflow inputs, the audit log and terminals."""
        if where := _control_characters(data, ()):
            raise ValueError(where)
        return data

    @classmethod
    def read(cls, path: Path) -> OrgFile:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except ValidationError as error:
            raise OrgError(f"{path}: {error}") from error
        except yaml.YAMLError as error:
            raise OrgError(f"{path}: not valid YAML: {error}") from error

    def check(self, known: Known | None = None, *, connectors: ConnectorCheck) -> list[OpenReference]:
        """Refuse references to users, groups, workflows or scopes neither the file nor ``known`` has, and
        integrations whose configuration ``connectors`` refuses (``OrgError``, naming every problem).

        Returns the birthright policies' references left open for a first directory sync or discovery.
        """
        problems, opened = check_references(self, known or Known(), connectors)
        if problems:
            raise OrgError(problems)
        return opened


def _control_characters(value: Any, path: tuple[str, ...]) -> str | None:
    """Where the first string under ``value`` holding control characters is, and which, or None."""
    if isinstance(value, str):
        bad = control_characters(value)
        return (
            f"{'.'.join(path) or 'the file'} contains control characters ({', '.join(bad[:5])}); remove them"
            if bad
            else None
        )
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if where := _control_characters(key, path) if isinstance(key, str) else None:
            return where
        if where := _control_characters(item, (*path, str(key))):
            return where
    return None


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


def load_org(session: Session, org: OrgFile, *, connectors: ConnectorCheck) -> list[OpenReference]:
    """Check the organisation file whole, then write it into the app DB, in the caller's transaction.

    The file may refer to users, groups, workflows and scopes already in the DB. Returns the birthright
    references left open until a first directory sync or discovery (see ``OrgFile.check``); ``load`` says
    what it changed too.
    """
    return load(session, org, connectors=connectors).opened


def load(session: Session, org: OrgFile, *, connectors: ConnectorCheck) -> Loaded:
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
            {"description": w.description, "rules": [r.model_dump(mode="json") for r in w.rules]},
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
    return loaded


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
        user.active = entry.active
        user.is_admin = entry.admin
        session.add(user)
    session.flush()
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

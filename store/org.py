"""The organisation file: users, groups, integrations, approval workflows and their assignment, birthright policies.

The run command loads the bundled demo organisation on first start; admins load their own
through the API (``POST /api/org``, ``lapse load-org FILE``). Loading is idempotent: entries are
matched by name (email for users) and updated in place.

A file is checked whole before anything of it is stored (``store.org_check``): whoever loads one passes
``connectors``, which builds an integration's connector, since persistence imports no connector driver.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from sqlmodel import Session, col, delete, select

from access.durations import Duration
from access.limits import control_characters
from access.types import ApprovalPolicy, Model, Sensitivity
from store import groups as group_refs
from store.org_check import ConnectorCheck, Known, OpenReference, OrgProblem, check_references
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


def _path_part(value: str) -> str:
    if not value.strip() or "/" in value:
        raise ValueError(f"{value!r}: a name cannot be empty or hold '/' (it separates the parts of a role path)")
    return value


def _integration_name(value: str) -> str:
    if ":" in _path_part(value):
        raise ValueError(f"{value!r}: an integration's name cannot hold ':' (it separates a group's source)")
    return value


PathPart = Annotated[str, AfterValidator(_path_part)]
"""A resource's or a role's name: one part of ``integration/resource/role``."""
IntegrationName = Annotated[str, AfterValidator(_integration_name)]


class OrgError(ValueError):
    """The organisation file is malformed or refers to something it does not define."""

    def __init__(self, problems: list[OrgProblem] | str) -> None:
        self.problems = [OrgProblem("", problems)] if isinstance(problems, str) else problems
        super().__init__("; ".join(problem.message for problem in self.problems))


class UserEntry(Model):
    email: str
    name: str = ""
    manager: str | None = None
    admin: bool = False
    active: bool = True
    groups: list[str] = []
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
    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if ":" in value or not value.strip():
            raise ValueError(f"{value!r}: a group name cannot be empty or hold ':' (it separates a source)")
        return value.strip()


class RoleEntry(Model):
    name: PathPart
    description: str = ""
    sensitivity: Sensitivity = Sensitivity.MEDIUM
    owners: list[str] = []
    jit_only: bool = False
    """Only Lapse may grant it: discovery treats a grant made elsewhere as drift."""

    @field_validator("owners")
    @classmethod
    def _lower_emails(cls, value: list[str]) -> list[str]:
        return [owner.strip().lower() for owner in value]


class ResourceEntry(Model):
    name: PathPart
    description: str = ""
    roles: list[RoleEntry] = []


class DiscoveryEntry(Model):
    every: Duration = timedelta(minutes=15)
    """How often the discovery schedule runs."""
    enforce_jit_only: bool = False
    """Revoke grants of JIT-only roles made outside Lapse."""


class IntegrationEntry(Model):
    name: IntegrationName
    kind: str = "ledger"
    description: str = ""
    config: dict[str, Any] = {}
    """Connector settings; secrets only as references (``dsn_env``, ``dsn_file``), never inline."""
    discovery: DiscoveryEntry = DiscoveryEntry()
    resources: list[ResourceEntry] = []
    directory: bool = False
    """Also the identity source: the directory sync reads users and groups from it (``ldap`` only)."""


class AssignmentEntry(Model):
    workflow: str
    scope: str
    """``integration``, ``integration/resource`` or ``integration/resource/role``."""


class BirthrightPolicyEntry(Model):
    name: str
    groups: list[str] = Field(min_length=1)
    roles: list[str] = Field(min_length=1)
    """Role paths ``integration/resource/role``."""
    description: str = ""


class OrgFile(Model):
    users: list[UserEntry] = []
    groups: list[GroupEntry] = []
    integrations: list[IntegrationEntry] = []
    approval_workflows: list[ApprovalPolicy] = Field(default=[])
    assignments: list[AssignmentEntry] = []
    birthright_policies: list[BirthrightPolicyEntry] = []
    """In order: a role two policies grant is attributed to the first."""

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


def _upsert(session: Session, model: type[T], where: dict[str, object], values: dict[str, object]) -> T:
    query = select(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    row = session.exec(query).first()
    if row is None:
        row = model(**where, **values)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.add(row)
    session.flush()
    return row


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


def load_org(session: Session, org: OrgFile, *, connectors: ConnectorCheck) -> list[OpenReference]:
    """Check the organisation file whole, then write it into the app DB, in the caller's transaction.

    The file may refer to users, groups, workflows and scopes already in the DB. Returns the birthright
    references left open until a first directory sync or discovery (see ``OrgFile.check``).
    """
    opened = org.check(Known.read(session), connectors=connectors)
    for g in org.groups:
        _upsert(
            session,
            Group,
            {"source": group_refs.FILE, "name": g.name},
            {"description": g.description, "external_id": g.name},
        )
    for entry in org.users:
        _upsert(
            session,
            User,
            {"email": entry.email.lower()},
            {
                "name": entry.name,
                "manager_email": entry.manager.lower() if entry.manager else None,
                "active": entry.active,
                "is_admin": entry.admin,
            },
        )
    for entry in org.users:
        user = _one(session, User, email=entry.email.lower())
        # Only the file's own groups: a directory's memberships are the directory's to decide.
        file_group_ids = select(Group.id).where(Group.source == group_refs.FILE)
        session.exec(
            delete(Membership).where(col(Membership.user_id) == user.id, col(Membership.group_id).in_(file_group_ids))
        )
        for group in entry.groups:
            group_id = _one(session, Group, source=group_refs.FILE, name=group).id
            session.add(Membership(user_id=user.id, group_id=group_id))  # type: ignore[arg-type]
    for integ in org.integrations:
        integration = _upsert(
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
        for res in integ.resources:
            where: dict[str, object] = {"integration_id": integration.id, "name": res.name}
            resource = _upsert(session, Resource, where, {"description": res.description})
            for role_entry in res.roles:
                role = _upsert(
                    session,
                    Role,
                    {"resource_id": resource.id, "name": role_entry.name},
                    {
                        "path": f"{integ.name}/{res.name}/{role_entry.name}",
                        "description": role_entry.description,
                        "sensitivity": role_entry.sensitivity.value,
                        "jit_only": role_entry.jit_only,
                    },
                )
                session.exec(delete(RoleOwner).where(col(RoleOwner.role_id) == role.id))
                for owner in role_entry.owners:
                    owner_id = _one(session, User, email=owner.lower()).id
                    session.add(RoleOwner(role_id=role.id, user_id=owner_id))  # type: ignore[arg-type]
    for w in org.approval_workflows:
        _upsert(
            session,
            ApprovalWorkflow,
            {"name": w.name},
            {"description": w.description, "rules": [r.model_dump(mode="json") for r in w.rules]},
        )
    for assignment in org.assignments:
        integration_id, resource_id, role_id = _scope(session, assignment.scope)
        _upsert(
            session,
            ApprovalAssignment,
            {"integration_id": integration_id, "resource_id": resource_id, "role_id": role_id},
            {"approval_workflow_id": _one(session, ApprovalWorkflow, name=assignment.workflow).id},
        )
    if org.birthright_policies:
        _load_birthright(session, org.birthright_policies)
    session.flush()
    return opened


def _load_birthright(session: Session, entries: list[BirthrightPolicyEntry]) -> None:
    """The file's policies first, in its order; policies only the DB has keep their order after them."""
    named = {e.name for e in entries}
    others = session.exec(
        select(BirthrightPolicy)
        .where(col(BirthrightPolicy.name).not_in(named))
        .order_by(col(BirthrightPolicy.position), col(BirthrightPolicy.id))
    ).all()
    for position, entry in enumerate(entries):
        values = {"position": position, "groups": entry.groups, "roles": entry.roles, "description": entry.description}
        _upsert(session, BirthrightPolicy, {"name": entry.name}, values)
    for position, policy in enumerate(others, start=len(entries)):
        policy.position = position
        session.add(policy)

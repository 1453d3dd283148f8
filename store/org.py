"""The organisation file: users, groups, integrations, approval workflows and their assignment, birthright policies.

The run command loads the bundled demo organisation on first start; admins can load
their own with ``lapse load-org FILE``. Loading is idempotent: entries are matched by
name (email for users) and updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator
from sqlmodel import Session, col, delete, select

from access.durations import Duration
from access.types import ApprovalPolicy, Model, Sensitivity
from activities.connectors import built, check_config
from store import groups as group_refs
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


class OrgError(ValueError):
    """The organisation file is malformed or refers to something it does not define."""


@dataclass
class Known:
    """What the app DB already holds, which an organisation file may refer to."""

    emails: set[str] = field(default_factory=set)
    groups: list[group_refs.GroupRow] = field(default_factory=list)
    """Every group of every source: a policy's group reference must name exactly one."""
    workflows: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, session: Session) -> Known:
        scopes = set(session.exec(select(Role.path))) | set(session.exec(select(Integration.name)))
        for resource, integration in session.exec(
            select(Resource, Integration).join(Integration, col(Resource.integration_id) == Integration.id)
        ):
            scopes.add(f"{integration.name}/{resource.name}")
        return cls(
            emails=set(session.exec(select(User.email))),
            groups=[
                group_refs.GroupRow(id=g.id or 0, source=g.source, name=g.name, external_id=g.external_id)
                for g in session.exec(select(Group))
            ],
            workflows=set(session.exec(select(ApprovalWorkflow.name))),
            scopes=scopes,
        )


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
    name: str
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
    name: str
    description: str = ""
    roles: list[RoleEntry] = []


class DiscoveryEntry(Model):
    every: Duration = timedelta(minutes=15)
    """How often the discovery schedule runs."""
    enforce_jit_only: bool = False
    """Revoke grants of JIT-only roles made outside Lapse."""


class IntegrationEntry(Model):
    name: str
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

    @classmethod
    def read(cls, path: Path) -> OrgFile:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except ValidationError as error:
            raise OrgError(f"{path}: {error}") from error
        except yaml.YAMLError as error:
            raise OrgError(f"{path}: not valid YAML: {error}") from error

    def check(self, known: Known | None = None) -> None:
        """Refuse references to users, groups, workflows or scopes neither the file nor ``known`` has."""
        known = known or Known()
        emails = {u.email.lower() for u in self.users} | known.emails
        # Groups are known by source: the file's own by name, each directory's by external id.
        rows = {(row.source, row.external_id or row.name): row for row in known.groups}
        for entry in self.groups:
            rows.setdefault(
                (group_refs.FILE, entry.name), group_refs.GroupRow(0, group_refs.FILE, entry.name, entry.name)
            )
        file_groups = {name for source, name in rows if source == group_refs.FILE}

        def unknown(ref: str) -> str | None:
            return group_refs.resolve_one(ref, rows.values(), show=str).problem

        problems: list[str] = []
        for user in self.users:
            if user.manager and user.manager.lower() not in emails:
                problems.append(f"user {user.email}: manager {user.manager} is not a user")
            problems += [f"user {user.email}: unknown group {g}" for g in user.groups if g not in file_groups]
        scopes = set(known.scopes)
        for integration in self.integrations:
            scopes.add(integration.name)
            try:
                check_config(integration.kind, integration.config)
            except ValidationError as error:  # its messages only: the values may be secrets put in by mistake
                problems += [
                    f"integration {integration.name}: config.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in error.errors()
                ]
            except ValueError as error:
                problems.append(f"integration {integration.name}: {error}")
            if integration.directory and integration.kind != "ldap":
                problems.append(f"integration {integration.name}: only an ldap integration can be the directory")
            for resource in integration.resources:
                scopes.add(f"{integration.name}/{resource.name}")
                for role in resource.roles:
                    scopes.add(f"{integration.name}/{resource.name}/{role.name}")
                    problems += [
                        f"role {integration.name}/{resource.name}/{role.name}: owner {o} is not a user"
                        for o in role.owners
                        if o.lower() not in emails
                    ]
        workflows = {w.name for w in self.approval_workflows} | known.workflows
        for workflow in self.approval_workflows:
            for rule in workflow.rules:
                for step in rule.steps:
                    for approver in step.approvers:
                        if approver.kind == "group" and (why := unknown(approver.name or "")):
                            problems.append(f"workflow {workflow.name}: {why}")
                        if approver.kind == "user" and (approver.name or "").lower() not in emails:
                            problems.append(f"workflow {workflow.name}: unknown user {approver.name}")
                for group in rule.when.groups + rule.when.on_call:
                    if why := unknown(group):
                        problems.append(f"workflow {workflow.name}: {why}")
        for assignment in self.assignments:
            if assignment.workflow not in workflows:
                problems.append(f"assignment: unknown workflow {assignment.workflow}")
            if assignment.scope not in scopes:
                problems.append(f"assignment: unknown scope {assignment.scope}")
        seen: set[str] = set()
        for policy in self.birthright_policies:
            if policy.name in seen:
                problems.append(f"birthright policy {policy.name}: defined twice")
            seen.add(policy.name)
            problems += [f"birthright policy {policy.name}: {why}" for g in policy.groups if (why := unknown(g))]
            problems += [
                f"birthright policy {policy.name}: unknown role {r}"
                for r in policy.roles
                if r.count("/") != 2 or r not in scopes
            ]
        if problems:
            raise OrgError("; ".join(problems))


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


def load_org(session: Session, org: OrgFile) -> None:
    """Write the organisation into the app DB, in the caller's transaction.

    The file may refer to users, groups, workflows and scopes already in the DB.
    """
    org.check(Known.read(session))
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
        _refuse_per_grant_roles(session, org.birthright_policies)
        _load_birthright(session, org.birthright_policies)
    session.flush()


def _refuse_per_grant_roles(session: Session, entries: list[BirthrightPolicyEntry]) -> None:
    """Birthright access has no end: it cannot go through an integration that makes a login per grant."""
    problems = []
    for entry in entries:
        for path in entry.roles:
            integration = session.exec(select(Integration).where(Integration.name == path.split("/", 1)[0])).first()
            connector = built(integration.kind, integration.config) if integration else None
            if connector is not None and connector.per_grant_accounts:
                problems.append(
                    f"birthright policy {entry.name}: role {path} is in {integration.name if integration else '?'}, "
                    "which makes a login per grant (ephemeral credentials)"
                )
    if problems:
        raise OrgError("; ".join(problems))


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

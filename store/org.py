"""The organisation file: users, groups, integrations, approval workflows and their assignment, birthright policies,
access review definitions.

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

from access.durations import Duration
from access.limits import MAX_EMAIL, MAX_ITEMS, MAX_NAME, MAX_ROLE_PATH, MAX_TEXT, control_characters
from access.reviews import ReviewDefinition
from access.types import ApprovalPolicy, BreakGlass, Model, Rule, Sensitivity
from store import groups as group_refs
from store.org_check import ConnectorCheck, Known, OpenReference, OrgProblem, check_references

T = TypeVar("T")

DEMO_ORG = Path(__file__).parent / "demo_org.yaml"


LIMITS = {
    "users": 20_000,
    "groups": 5_000,
    "integrations": MAX_ITEMS,
    "approval_workflows": MAX_ITEMS,
    "assignments": 5_000,
    "birthright_policies": MAX_ITEMS,
    "reviews": MAX_ITEMS,
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
    department: Name | None = None
    """Shown to reviewers beside the manager; a directory that names departments sets its own users'."""
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
    break_glass: BreakGlass | None = None
    """Emergency access: ``{max_duration: PT1H, review_within: PT24H, notify: [security]}`` lets its holder be
    granted it at once, reviewed afterwards (``access.break_glass``)."""

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
                for a, approver in enumerate(step.escalate_to):
                    texts.append((f"rules.{r}.steps.{s}.escalate_to.{a}.name", approver.name or "", MAX_EMAIL))
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
    reviews: list[ReviewDefinition] = []
    """Access review definitions, as ``POST /api/reviews/definitions`` takes them (checked once the rest of the
    file is in: they may name its users, groups and roles)."""
    notifications: dict[str, Any] | None = None
    """How Lapse reaches people (Slack, Teams, email, webhooks), kept whole: its model and check are the
    senders' (``activities.notify.config.NotificationSettings``), passed to the loader as a ``SectionCheck``.
    Not given: what is stored stays; ``{}``: nobody is notified."""
    on_call: dict[str, Any] | None = None
    """Where "is the requester on call now" is read (PagerDuty, Opsgenie), kept whole like ``notifications``."""

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

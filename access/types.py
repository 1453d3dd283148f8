"""The base model and the approval policy's models: rules, steps, approvers, plans; audit entries.

Workflows, activities and the API share these; none of them touches the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from access.durations import Duration, format_duration
from access.limits import MAX_REAUTHENTICATE, MIN_REAUTHENTICATE


class Model(BaseModel):
    """Base for Lapse's value types: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- approval policy --------------------------------------------------------------------


class Sensitivity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ApproverKind(StrEnum):
    MANAGER = "manager"
    """The requester's direct manager."""
    RESOURCE_OWNER = "resource_owner"
    """The owners of the requested role."""
    GROUP = "group"
    """Any member of the named group."""
    USER = "user"
    """The named user."""


class Approver(Model):
    """Who may approve a step, by abstract type; resolved to people when the step opens."""

    kind: ApproverKind
    name: str | None = None
    """A group reference (``group``: ``name``, ``source:name`` or ``source:#external-id``, see
    ``store.groups``) or the user's email (``user``)."""

    @model_validator(mode="after")
    def _name_matches_kind(self) -> Approver:
        needs_name = self.kind in (ApproverKind.GROUP, ApproverKind.USER)
        if needs_name and not self.name:
            raise ValueError(f"approver of kind {self.kind.value!r} needs a name")
        if not needs_name and self.name:
            raise ValueError(f"approver of kind {self.kind.value!r} takes no name")
        if self.kind is ApproverKind.USER and self.name:
            self.name = self.name.strip().lower()  # emails compare case-insensitively, as users are stored
        return self

    def describe(self) -> str:
        return f"{self.kind.value}:{self.name}" if self.name else self.kind.value


class Step(Model):
    """One approval step: ``quorum`` distinct eligible people must approve it."""

    name: str = ""
    approvers: list[Approver] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1)


class Conditions(Model):
    """When a rule applies. Every condition given must hold; none given matches everyone."""

    groups: list[str] = []
    """The requester is a member of at least one of these groups (group references, see ``store.groups``)."""
    on_call: list[str] = []
    """The requester is on call in one of these rotations (modelled as groups for now; group references)."""
    duration_at_most: Duration | None = None
    """The requested duration is at most this long."""


class Rule(Model):
    name: str
    when: Conditions = Conditions()
    steps: list[Step] = []
    """Approval steps, opened in order; none means the request is granted at once."""
    max_duration: Duration
    justification: bool = True
    """Whether a request under this rule must give a justification."""
    distinct_approvers: bool = True
    """One person's decision counts for one step of a request only; ``false`` lets the same person
    approve several steps (say so explicitly: it weakens a multi-step rule to fewer people)."""

    @model_validator(mode="after")
    def _positive_max(self) -> Rule:
        if self.max_duration <= timedelta(0):
            raise ValueError(f"rule {self.name!r}: max_duration must be longer than zero")
        return self


class ApprovalPolicy(Model):
    """An approval workflow: ordered rules, evaluated top to bottom; the first match wins."""

    name: str
    description: str = ""
    rules: list[Rule] = Field(min_length=1)
    reauthenticate_within: Duration | None = None
    """Approving, extending or revoking a request under this workflow needs a sign-in at the identity provider
    at most this long ago (``PT10M``): an older browser session is sent back to sign in again (``max_age``).
    None: any signed-in caller may. Between ``MIN_REAUTHENTICATE`` and ``MAX_REAUTHENTICATE``."""

    @field_validator("reauthenticate_within")
    @classmethod
    def _reauthenticate_bounded(cls, window: timedelta | None) -> timedelta | None:
        if window is not None and not MIN_REAUTHENTICATE <= window <= MAX_REAUTHENTICATE:
            raise ValueError(
                f"{format_duration(window)} is out of bounds: reauthenticate_within must be between "
                f"{format_duration(MIN_REAUTHENTICATE)} and {format_duration(MAX_REAUTHENTICATE)}"
            )
        return window


# --- what the policy needs to know, and what it decides ----------------------------------


class Requester(Model):
    email: str
    manager: str | None = None
    """The manager's email, when the manager is an active user."""
    groups: list[str] = []
    """The policy's group references the requester is a member of (through the one group each names)."""


class RoleFacts(Model):
    path: str
    """``integration/resource/role``."""
    owners: list[str] = []
    sensitivity: Sensitivity = Sensitivity.MEDIUM


class PolicyContext(Model):
    """The slice of the organisation a policy decision reads, taken from the app DB."""

    requester: Requester
    role: RoleFacts
    group_members: dict[str, list[str]] = {}
    """Active members of every group the policy's approvers name, by reference (none when it names no
    single group)."""
    inactive: list[str] = []
    """Users the policy's approvers name (``user``) who are no longer active: they approve nothing."""


class StepPlan(Model):
    name: str
    approvers: list[Approver]
    quorum: int
    eligible: list[str]
    """Who could decide this step when the plan was made (never the requester)."""


class RequestPlan(Model):
    """The outcome of policy evaluation: the rule that matched and its steps."""

    policy: str
    rule: str
    max_duration: Duration
    """The longest grant this rule allows: its ``max_duration``, or less where its condition caps it."""
    steps: list[StepPlan]
    distinct_approvers: bool = True
    """One person's decision counts for one step only (the rule's ``distinct_approvers``)."""
    reauthenticate_within: Duration | None = None
    """The workflow's ``reauthenticate_within``: deciding, extending or revoking needs a sign-in this recent."""


class AuditEntry(Model):
    actor: str
    action: str
    target: str
    reason: str = ""
    details: dict[str, Any] = {}
    at: datetime | None = None
